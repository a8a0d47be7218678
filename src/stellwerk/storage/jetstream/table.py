"""Records in KV-shaped tables (`streams.table_config`), and the messages written beside them.

A record is read from the stream leader when a decision follows from it and changed by a
compare-and-set on its key's last sequence; a lost compare-and-set is a `None`, not a failure.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import timedelta
from typing import ClassVar, Final

import msgspec
from nats.aio.msg import Msg

from stellwerk.storage.jetstream.connection import (
    NO_RESPONDERS,
    STATUS,
    Connection,
    JetStreamApiError,
)
from stellwerk.storage.jetstream.names import check_namespace
from stellwerk.storage.jetstream.streams import NO_MESSAGE, WRONG_LAST_SEQUENCE, failures_as

MSG_ID: Final = "Nats-Msg-Id"
EXPECTED_LAST: Final = "Nats-Expected-Last-Subject-Sequence"
TTL: Final = "Nats-TTL"
SCAN_BATCH: Final = 500


@dataclass(frozen=True)
class TableLayout:
    """The names of a store's table in one installation (its `namespace`, as the event log's):
    the stream `KV_<namespace>_<TABLE>`, which `nats kv` reads as a bucket. A subclass names
    `TABLE` and its keys."""

    TABLE: ClassVar[str]
    namespace: str = "stellwerk"

    def __post_init__(self) -> None:
        check_namespace(self.namespace)

    @property
    def bucket(self) -> str:
        return f"{self.namespace}_{self.TABLE}"

    @property
    def table_stream(self) -> str:
        return f"KV_{self.bucket}"

    @property
    def table_subjects(self) -> str:
        return f"$KV.{self.bucket}.>"

    def key(self, *tokens: str) -> str:
        """The subject of a record: its tokens (each a valid subject token) under the bucket."""
        return ".".join(("$KV", self.bucket, *tokens))


@dataclass(frozen=True, slots=True)
class Stored:
    """One stored message: where it is, its headers and its body."""

    subject: str
    seq: int
    headers: dict[str, str]
    data: bytes


class Put(msgspec.Struct, frozen=True):
    """One write: `expected` is the subject's last sequence it must find (None: any, 0: no
    message yet); `ttl` lets JetStream remove it by itself (whole seconds, at least one)."""

    subject: str
    body: bytes
    expected: int | None = None
    msg_id: str | None = None
    ttl: timedelta | None = None
    headers: dict[str, str] | None = None

    def all_headers(self) -> dict[str, str]:
        headers = dict(self.headers or {})
        if self.expected is not None:
            headers[EXPECTED_LAST] = str(self.expected)
        if self.msg_id is not None:
            headers[MSG_ID] = self.msg_id
        if self.ttl is not None:
            headers[TTL] = f"{max(1, int(self.ttl.total_seconds()))}s"
        return headers


class _ApiError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class _PubAck(msgspec.Struct):
    seq: int = 0
    duplicate: bool = False
    error: _ApiError | None = None


decode_ack: Final = msgspec.json.Decoder(_PubAck).decode


async def publish_all(
    conn: Connection, puts: Sequence[Put], ack_timeout: float
) -> list[asyncio.Future[Msg]]:
    """Publish every put at once and wait up to `ack_timeout` seconds for their replies; the
    futures come back in `puts` order, done or not (the caller cancels those it gives up on).

    `wait`, not `wait_for(gather(...))`: a cancelled gather leaves an exception nobody
    retrieves (Python 3.11), and a worker stopping cancels writes. On any exception, a
    cancellation too, every future is cancelled, so no reply stays awaited.
    """
    futures: list[asyncio.Future[Msg]] = []
    try:
        for put in puts:
            futures.append(await conn.publish(put.subject, put.body, put.all_headers()))
        if futures:
            await asyncio.wait(futures, timeout=ack_timeout)
    except BaseException:
        for future in futures:
            future.cancel()
        raise
    return futures


async def scan(
    conn: Connection,
    stream: str,
    subjects: str,
    start: int = 1,
    batch: int = SCAN_BATCH,
    failures: Callable[[], AbstractContextManager[None]] = nullcontext,
) -> AsyncIterator[list[Stored]]:
    """Every message on `subjects` from sequence `start` on, a Direct Get batch at a time; a
    failed read raises inside `failures` (JetStream's own errors by default)."""
    while True:
        request = {"seq": start, "batch": batch, "next_by_subj": subjects}
        with failures():
            page = [stored(msg) for msg in await conn.direct_batch(stream, request)]
        if not page:
            return
        yield page
        if len(page) < batch:
            return
        start = page[-1].seq + 1


def stored(msg: Msg) -> Stored:
    """A Direct Get reply as the message it holds."""
    headers = dict(msg.headers or {})
    return Stored(
        headers.get("Nats-Subject", ""), int(headers.get("Nats-Sequence", 0)), headers, msg.data
    )


class TableIO:
    """Reads and compare-and-set writes over one `Connection`, failing as `error`.

    `ack_timeout` is how long `put_many` waits for JetStream's acknowledgements.
    """

    def __init__(self, conn: Connection, *, error: type[Exception], ack_timeout: float) -> None:
        self.conn = conn
        self.error = error
        self.ack_timeout = ack_timeout

    def failures(self) -> AbstractContextManager[None]:
        return failures_as(self.error)

    async def get(self, stream: str, request: dict[str, object]) -> Stored | None:
        """A `STREAM.MSG.GET` from the stream leader (it has every acknowledged write); None
        if no message matches."""
        try:
            with self.failures():
                answer = await self.conn.api(f"$JS.API.STREAM.MSG.GET.{stream}", request)
        except self.error as exc:
            cause = exc.__cause__
            if isinstance(cause, JetStreamApiError) and cause.err_code == NO_MESSAGE:
                return None
            raise
        message = answer["message"]
        raw = message.get("hdrs")
        return Stored(
            message["subject"],
            int(message["seq"]),
            _parse_headers(base64.b64decode(raw)) if raw else {},
            base64.b64decode(message.get("data") or ""),
        )

    async def last(self, stream: str, key: str) -> Stored | None:
        """The record under `key` (a subject of `stream`), from the leader; None if none."""
        return await self.get(stream, {"last_by_subj": key})

    async def put_many(self, puts: Sequence[Put]) -> list[int | None]:
        """Publish all at once; per put its sequence (a duplicate's: the original's), or None
        when its `expected` did not hold."""
        if not puts:
            return []
        with self.failures():
            futures = await publish_all(self.conn, puts, self.ack_timeout)
            try:
                late = sum(not future.done() for future in futures)
                if late:
                    raise self.error(
                        f"JetStream did not acknowledge {late} of {len(puts)} writes in time"
                    )
                return [self._settle(future.result()) for future in futures]
            finally:
                for future in futures:
                    future.cancel()  # those still waiting; a done future stays as it is

    async def put(self, put: Put) -> int | None:
        (result,) = await self.put_many([put])
        return result

    def scan(
        self, stream: str, subjects: str, start: int = 1, batch: int = SCAN_BATCH
    ) -> AsyncIterator[list[Stored]]:
        return scan(self.conn, stream, subjects, start, batch, self.failures)

    async def delete(self, stream: str, seq: int, *, erase: bool = False) -> bool:
        """Remove message `seq` (overwriting its bytes if `erase`); False if it was gone."""
        request = {"seq": seq, "no_erase": not erase}
        try:
            with self.failures():
                await self.conn.api(f"$JS.API.STREAM.MSG.DELETE.{stream}", request)
        except self.error as exc:
            cause = exc.__cause__
            if isinstance(cause, JetStreamApiError) and cause.code == 404:
                return False
            raise
        return True

    def _settle(self, reply: Msg) -> int | None:
        status = reply.headers.get(STATUS) if reply.headers else None
        if status == NO_RESPONDERS:
            raise self.error("no JetStream responder for a write (no stream leader?)")
        ack = decode_ack(reply.data)
        if ack.error is not None:
            if ack.error.err_code == WRONG_LAST_SEQUENCE:
                return None
            raise self.error(
                f"JetStream refused a write: {ack.error.description} (error {ack.error.err_code})"
            )
        return ack.seq


def _parse_headers(raw: bytes) -> dict[str, str]:
    """A stored message's header block (`NATS/1.0` and `Key: Value` lines) as a dict."""
    headers: dict[str, str] = {}
    for line in raw.decode("utf-8", "replace").split("\r\n")[1:]:
        key, sep, value = line.partition(":")
        if sep:
            headers[key.strip()] = value.strip()
    return headers

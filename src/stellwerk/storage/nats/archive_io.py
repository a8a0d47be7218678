"""The JetStream requests of the archive store, over the event log's `Connection`.

Streams are made once per process; table records are read from the stream leader (a decision
follows from them) and written by compare-and-set on the key's last sequence; copies are
published many at once and their acknowledgements awaited together. Every JetStream failure
leaves here as `ArchivesUnavailable`; a compare-and-set that finds another write first is not
a failure but a `None`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any, Final

import msgspec
from nats.aio.msg import Msg

from stellwerk.storage.archives import ArchiveStoreError
from stellwerk.storage.nats import records
from stellwerk.storage.nats.archive_records import ArchiveLayout
from stellwerk.storage.nats.connection import (
    NO_RESPONDERS,
    STATUS,
    Connection,
    JetStreamApiError,
    JetStreamUnavailable,
)
from stellwerk.storage.nats.queries import StreamQueries

STREAM_NAME_IN_USE: Final = 10058
WRONG_LAST_SEQUENCE: Final = 10071
EXPECTED_LAST: Final = "Nats-Expected-Last-Subject-Sequence"


class ArchivesUnavailable(ArchiveStoreError):
    """JetStream did not answer, or refused: nothing is known to have changed. Try later."""


@contextlib.contextmanager
def unavailable_as_archive_error() -> Iterator[None]:
    try:
        yield
    except (JetStreamUnavailable, JetStreamApiError) as exc:
        raise ArchivesUnavailable(str(exc)) from exc


class _ApiError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class _PubAck(msgspec.Struct):
    seq: int = 0
    duplicate: bool = False
    error: _ApiError | None = None


_decode_ack: Final = msgspec.json.Decoder(_PubAck).decode


class Publish(msgspec.Struct, frozen=True):
    """One write: `expected` is the subject's last sequence it must find (None: any)."""

    subject: str
    body: bytes
    headers: dict[str, str] | None = None
    expected: int | None = None


class ArchiveIO:
    """The copies stream and the table of one namespace, on an open `Connection`."""

    def __init__(
        self, conn: Connection, layout: ArchiveLayout, *, replicas: int,
        dedup_window: timedelta, ack_timeout: float,
    ) -> None:  # fmt: skip
        self.conn = conn
        self.queries = StreamQueries(conn)
        self.layout = layout
        self.replicas = replicas
        self.dedup_window = dedup_window
        self.ack_timeout = ack_timeout

    async def ensure_streams(self) -> None:
        window_ns = self.dedup_window // timedelta(microseconds=1) * 1000
        copies = {
            "name": self.layout.copies_stream,
            "subjects": [self.layout.copies_subjects],
            "retention": "limits",
            "storage": "file",
            "discard": "old",
            "num_replicas": self.replicas,
            "duplicate_window": window_ns,
            "allow_direct": True,
        }
        table = {
            "name": self.layout.table_stream,
            "subjects": [self.layout.table_subjects],
            "retention": "limits",
            "storage": "file",
            "discard": "new",
            "max_msgs_per_subject": 1,
            "num_replicas": self.replicas,
            "duplicate_window": window_ns,
            "allow_direct": True,
            "allow_rollup_hdrs": True,
        }
        with unavailable_as_archive_error():
            for config in (copies, table):
                await self._create(config)

    async def _create(self, config: dict[str, Any]) -> None:
        name = config["name"]
        try:
            await self.conn.api(f"$JS.API.STREAM.CREATE.{name}", config)
        except JetStreamApiError as exc:
            if exc.err_code != STREAM_NAME_IN_USE:
                raise
            current = (await self.conn.api(f"$JS.API.STREAM.INFO.{name}"))["config"]
            changed = {k: config[k] for k in ("num_replicas", "duplicate_window")}
            if any(current.get(k) != v for k, v in changed.items()):
                await self.conn.api(f"$JS.API.STREAM.UPDATE.{name}", {**current, **changed})

    # -- the table -----------------------------------------------------------------------------

    async def record(self, key: str) -> tuple[int, bytes]:
        """The table's record under `key` from the leader: (its sequence, its data), or (0, b"")
        when there is none (0 is also what a compare-and-set on "no record yet" expects)."""
        with unavailable_as_archive_error():
            found = await self.queries.last_message(self.layout.table_stream, key)
        if found is None:
            return 0, b""
        return int(found["seq"]), base64.b64decode(found.get("data") or "")

    async def put(self, key: str, body: bytes, expected: int) -> int | None:
        (seq,) = await self.publish_many([Publish(key, body, expected=expected)])
        return seq

    # -- copies --------------------------------------------------------------------------------

    async def publish_many(self, puts: Sequence[Publish]) -> list[int | None]:
        """Publish all at once; per put its sequence (a duplicate's: the original's), or None
        when its `expected` did not hold."""
        if not puts:
            return []
        futures: list[asyncio.Future[Msg]] = []
        try:
            with unavailable_as_archive_error():
                for put in puts:
                    headers = dict(put.headers or {})
                    if put.expected is not None:
                        headers[EXPECTED_LAST] = str(put.expected)
                    futures.append(await self.conn.publish(put.subject, put.body, headers))
                # `wait`, not `wait_for(gather(...))`: see `delivery_store.put_many`.
                _, late = await asyncio.wait(futures, timeout=self.ack_timeout)
                if late:
                    raise ArchivesUnavailable(
                        f"JetStream did not acknowledge {len(late)} of {len(puts)} writes in time"
                    )
                return [_settle(future.result()) for future in futures]
        except BaseException:
            for future in futures:
                future.cancel()
            raise

    async def page(self, subject: str, start: int, batch: int) -> list[Msg]:
        """Up to `batch` copies on `subject` from stream sequence `start` on (any replica)."""
        with unavailable_as_archive_error():
            return await self.queries.page(self.layout.copies_stream, subject, start, batch)

    async def count_from(self, subject: str, start: int) -> int:
        """How many copies `subject` holds from stream sequence `start` on: the first of them
        and the count JetStream says is pending after it (one request, no scan)."""
        found = await self.page(subject, start, 1)
        if not found:
            return 0
        pending = (found[0].headers or {}).get(records.NUM_PENDING)
        if pending is None:
            raise ArchivesUnavailable("JetStream did not say how many messages are pending")
        return 1 + int(pending)

    async def first_since(self, subject: str, since_us: int) -> int | None:
        """Where on `subject` the copies recorded at `since_us` or later begin (see
        `StreamQueries.first_since`); None if there is no copies stream yet."""
        stream = self.layout.copies_stream
        with unavailable_as_archive_error():
            state = await self.queries.state(stream)
            if state is None:
                return None
            return await self.queries.first_since(stream, subject, since_us, state)

    async def purge(self, subject: str, below: int | None = None) -> int:
        """Remove the copies on `subject` (those below sequence `below`, if given)."""
        request: dict[str, object] = {"filter": subject}
        if below is not None:
            request["seq"] = below
        with unavailable_as_archive_error():
            try:
                answer = await self.conn.api(
                    f"$JS.API.STREAM.PURGE.{self.layout.copies_stream}", request
                )
            except JetStreamApiError as exc:
                if exc.code == 404:  # no copies stream yet
                    return 0
                raise
        return int(answer.get("purged", 0))

    async def delete(self, seq: int, *, erase: bool) -> bool:
        """Remove copy `seq` (overwriting its bytes if `erase`); False if it was gone."""
        request = {"seq": seq, "no_erase": not erase}
        with unavailable_as_archive_error():
            try:
                await self.conn.api(
                    f"$JS.API.STREAM.MSG.DELETE.{self.layout.copies_stream}", request
                )
            except JetStreamApiError as exc:
                if exc.code == 404:
                    return False
                raise
        return True


def _settle(reply: Msg) -> int | None:
    status = reply.headers.get(STATUS) if reply.headers else None
    if status == NO_RESPONDERS:
        raise ArchivesUnavailable("no JetStream responder for a write (no stream leader?)")
    ack = _decode_ack(reply.data)
    if ack.error is not None:
        if ack.error.err_code == WRONG_LAST_SEQUENCE:
            return None
        raise ArchivesUnavailable(
            f"JetStream refused a write: {ack.error.description} (error {ack.error.err_code})"
        )
    return ack.seq

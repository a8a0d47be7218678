"""The JetStream requests the delivery queue makes, over the event log's `Connection`.

Reads that decide something (a cursor, a lane's record before a compare-and-set, the next
member of a lane) go to the stream leader (`STREAM.MSG.GET`), so they see every write that
was acknowledged. Reads that only fetch what cannot change (a member message by sequence) or
feed the index (a scan of the table) take Direct Get, which any replica may answer.

Every JetStream failure leaves here as `QueueUnavailable`, a `DeliveryQueueError`; a
compare-and-set that finds another write first is not a failure but a `None`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

import msgspec
from nats.aio.msg import Msg

from stellwerk.storage.deliveries import DeliveryQueueError
from stellwerk.storage.nats.connection import (
    NO_RESPONDERS,
    STATUS,
    Connection,
    JetStreamApiError,
    JetStreamUnavailable,
)
from stellwerk.storage.nats.delivery_records import (
    DELIVERY_HEADER,
    EXPECTED_LAST,
    MSG_ID,
    TTL,
    QueueLayout,
)

STREAM_NAME_IN_USE: Final = 10058
NO_MESSAGE: Final = 10037
WRONG_LAST_SEQUENCE: Final = 10071
SCAN_BATCH: Final = 500
_RUN_MAX: Final = 256  # messages one batch read of members may span
_INFO_PAGE: Final = 100_000


class QueueUnavailable(DeliveryQueueError):
    """JetStream did not answer, or refused: nothing is known to have changed. Try later."""


@dataclass(frozen=True, slots=True)
class Stored:
    """One stored message: where it is, its headers and its body."""

    subject: str
    seq: int
    headers: dict[str, str]
    data: bytes


class Put(msgspec.Struct, frozen=True):
    """One write: `expected` is the subject's last sequence it must find (None: any)."""

    subject: str
    body: bytes
    expected: int | None = None
    msg_id: str | None = None
    ttl: timedelta | None = None
    extra: dict[str, str] | None = None


class _ApiError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class _PubAck(msgspec.Struct):
    seq: int = 0
    duplicate: bool = False
    error: _ApiError | None = None


_decode_ack: Final = msgspec.json.Decoder(_PubAck).decode


@contextlib.contextmanager
def unavailable_as_queue_error() -> Iterator[None]:
    try:
        yield
    except (JetStreamUnavailable, JetStreamApiError) as exc:
        raise QueueUnavailable(str(exc)) from exc


class DeliveryStore:
    """The members stream and the table of one namespace, on an open `Connection`."""

    def __init__(
        self, conn: Connection, layout: QueueLayout, *, replicas: int, dedup_window: timedelta,
        ack_timeout: float,
    ) -> None:  # fmt: skip
        self.conn = conn
        self.layout = layout
        self.replicas = replicas
        self.dedup_window = dedup_window
        self.ack_timeout = ack_timeout

    # -- streams -------------------------------------------------------------------------------

    async def ensure_streams(self) -> None:
        window_ns = self.dedup_window // timedelta(microseconds=1) * 1000
        members = {
            "name": self.layout.members_stream,
            "subjects": [self.layout.members_subjects],
            "retention": "limits",
            "storage": "file",
            "discard": "old",
            "num_replicas": self.replicas,
            "duplicate_window": window_ns,
            "allow_direct": True,
            # A finished unordered delivery's message goes by a rollup marker that expires.
            "allow_rollup_hdrs": True,
            "allow_msg_ttl": True,
        }
        # KV-bucket shaped (one message per key), but deletes allowed for erasure, and
        # per-message TTLs so that the records of finished lanes go after the dedup window.
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
            "allow_msg_ttl": True,
        }
        with unavailable_as_queue_error():
            for config in (members, table):
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

    # -- reads ---------------------------------------------------------------------------------

    async def last(self, subject: str) -> Stored | None:
        """The table's record under `subject`, from the leader; None if there is none."""
        return await self._get(self.layout.table_stream, {"last_by_subj": subject})

    async def next_member(self, subject: str, after: int) -> Stored | None:
        """The first member message on `subject` above sequence `after`, from the leader
        (skipping the markers that finished deliveries leave)."""
        while True:
            request = {"next_by_subj": subject, "seq": after + 1}
            found = await self._get(self.layout.members_stream, request)
            if found is None or DELIVERY_HEADER in found.headers:
                return found
            after = found.seq

    async def members(self, seqs: Sequence[int]) -> dict[int, Stored]:
        """Member messages by sequence; those that are gone are missing from the answer.

        Members are immutable, so any replica may answer. Runs of nearby sequences (a lease
        of deliveries routed together) are read with one Direct Get batch each; what a
        lagging replica did not have yet is asked of the leader.
        """
        found: dict[int, Stored] = {}
        with unavailable_as_queue_error():
            pages = await asyncio.gather(*(self._run(run) for run in _runs(sorted(set(seqs)))))
        wanted = set(seqs)
        for page in pages:
            found.update((m.seq, m) for m in page if m.seq in wanted)
        missing = [seq for seq in wanted if seq not in found]
        stream = self.layout.members_stream
        again = await asyncio.gather(*(self._get(stream, {"seq": seq}) for seq in missing))
        found.update((m.seq, m) for m in again if m is not None)
        return found

    async def member(self, seq: int) -> Stored | None:
        return (await self.members([seq])).get(seq)

    async def _run(self, run: tuple[int, int]) -> list[Stored]:
        first, last = run
        request = {
            "seq": first,
            "batch": last - first + 1,
            "next_by_subj": self.layout.members_subjects,
        }
        page = await self.conn.direct_batch(self.layout.members_stream, request)
        return [m for m in map(_stored, page) if m.seq <= last]

    async def _get(self, stream: str, request: dict[str, object]) -> Stored | None:
        try:
            with unavailable_as_queue_error():
                answer = await self.conn.api(f"$JS.API.STREAM.MSG.GET.{stream}", request)
        except QueueUnavailable as exc:
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

    async def scan(
        self, stream: str, subjects: str, start: int = 1, batch: int = SCAN_BATCH
    ) -> AsyncIterator[list[Stored]]:
        """Every stored message on `subjects` from sequence `start` on, a page at a time."""
        while True:
            request = {"seq": start, "batch": batch, "next_by_subj": subjects}
            with unavailable_as_queue_error():
                page = [_stored(msg) for msg in await self.conn.direct_batch(stream, request)]
            if not page:
                return
            yield page
            if len(page) < batch:
                return
            start = page[-1].seq + 1

    async def subject_counts(self, stream: str, subjects: str) -> dict[str, int]:
        """Messages per subject matching `subjects` (the stream's own count, paged)."""
        counts: dict[str, int] = {}
        with unavailable_as_queue_error():
            while True:
                request = {"subjects_filter": subjects, "offset": len(counts)}
                info = await self.conn.api(f"$JS.API.STREAM.INFO.{stream}", request)
                page = info.get("state", {}).get("subjects") or {}
                counts.update(page)
                if not page or len(counts) >= int(info.get("total", 0)) or len(page) < _INFO_PAGE:
                    return counts

    # -- writes --------------------------------------------------------------------------------

    async def put_many(self, puts: Sequence[Put]) -> list[int | None]:
        """Publish all at once; per put its sequence (a duplicate's: the original's), or None
        when its `expected` did not hold."""
        if not puts:
            return []
        futures: list[asyncio.Future[Msg]] = []
        try:
            with unavailable_as_queue_error():
                for put in puts:
                    headers = dict(put.extra or {})
                    if put.expected is not None:
                        headers[EXPECTED_LAST] = str(put.expected)
                    if put.msg_id is not None:
                        headers[MSG_ID] = put.msg_id
                    if put.ttl is not None:
                        headers[TTL] = f"{max(1, int(put.ttl.total_seconds()))}s"
                    futures.append(await self.conn.publish(put.subject, put.body, headers))
                # `wait`, not `wait_for(gather(...))`: a cancelled gather leaves an exception
                # nobody retrieves (Python 3.11), and a worker stopping cancels writes.
                _, late = await asyncio.wait(futures, timeout=self.ack_timeout)
                if late:
                    raise QueueUnavailable(
                        f"JetStream did not acknowledge {len(late)} of {len(puts)} writes in time"
                    )
                return [_settle(future.result()) for future in futures]
        except BaseException:
            for future in futures:
                future.cancel()
            raise

    async def put(self, put: Put) -> int | None:
        (result,) = await self.put_many([put])
        return result

    async def delete(self, stream: str, seq: int, *, erase: bool = False) -> bool:
        """Remove message `seq` (overwriting its bytes if `erase`); False if it was gone."""
        request = {"seq": seq, "no_erase": not erase}
        try:
            with unavailable_as_queue_error():
                await self.conn.api(f"$JS.API.STREAM.MSG.DELETE.{stream}", request)
        except QueueUnavailable as exc:
            cause = exc.__cause__
            if isinstance(cause, JetStreamApiError) and cause.code == 404:
                return False
            raise
        return True


def _runs(seqs: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted sequences as (first, last) runs that a batch read covers without reading more
    than as many other messages as wanted ones."""
    runs: list[tuple[int, int]] = []
    count = 0
    for seq in seqs:
        if runs:
            first = runs[-1][0]
            if seq - first + 1 <= 2 * (count + 1) + 8 and seq - first < _RUN_MAX:
                runs[-1] = (first, seq)
                count += 1
                continue
        runs.append((seq, seq))
        count = 1
    return runs


def _settle(reply: Msg) -> int | None:
    status = reply.headers.get(STATUS) if reply.headers else None
    if status == NO_RESPONDERS:
        raise QueueUnavailable("no JetStream responder for a write (no stream leader?)")
    ack = _decode_ack(reply.data)
    if ack.error is not None:
        if ack.error.err_code == WRONG_LAST_SEQUENCE:
            return None
        raise QueueUnavailable(
            f"JetStream refused a write: {ack.error.description} (error {ack.error.err_code})"
        )
    return ack.seq


def _stored(msg: Msg) -> Stored:
    headers = dict(msg.headers or {})
    return Stored(
        headers.get("Nats-Subject", ""), int(headers.get("Nats-Sequence", 0)), headers, msg.data
    )


def _parse_headers(raw: bytes) -> dict[str, str]:
    """A stored message's header block (`NATS/1.0` and `Key: Value` lines) as a dict."""
    headers: dict[str, str] = {}
    for line in raw.decode("utf-8", "replace").split("\r\n")[1:]:
        key, sep, value = line.partition(":")
        if sep:
            headers[key.strip()] = value.strip()
    return headers

"""Appending a batch to JetStream: publish every event, then settle what each ack says.

JetStream's duplicate window makes the dedup check atomic across gateways; Stellwerk's clock has
the last word on whether an original is still inside the window, mostly decided before
publishing from the keys this process appended recently (docs/scale-out.md, "Duplicates").
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, NamedTuple

import msgspec
from nats.aio.msg import Msg

from stellwerk.clock import to_us
from stellwerk.seams import Announce, AppendResult, AppendStatus, NewEvent
from stellwerk.storage.jetstream import (
    NO_RESPONDERS,
    STATUS,
    Connection,
    ConnectionLost,
    JetStreamApiError,
    JetStreamUnavailable,
    Layout,
    message_id,
    records,
)

DUPLICATE_IN_PROCESS: Final = 10158
RECENT_KEYS: Final = 100_000
_FIRST_BACKOFF: Final = 0.02
_MAX_BACKOFF: Final = 0.5
_STORED: Final = AppendStatus.STORED
_DUPLICATE: Final = AppendStatus.DUPLICATE
Key = tuple[str, str, str, str]  # tenant, bus, source, id


class _ApiError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class _PubAck(msgspec.Struct):
    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: _ApiError | None = None


_decode_ack: Final = msgspec.json.Decoder(_PubAck).decode


class Known(NamedTuple):
    """A key's newest stored copy: its message id, position and recorded time."""

    msg_id: str
    position: int
    recorded_us: int


class RecentKeys:
    """The keys this process stored or met most recently, at most `capacity` of them."""

    def __init__(self, capacity: int = RECENT_KEYS) -> None:
        self._capacity = capacity
        self._known: dict[Key, Known] = {}

    def get(self, key: Key) -> Known | None:
        return self._known.get(key)

    def put(self, key: Key, known: Known) -> None:
        self._known.pop(key, None)
        self._known[key] = known
        if len(self._known) > self._capacity:
            del self._known[next(iter(self._known))]


@dataclass
class _Attempt:
    """One event on its way into the stream, under its current message id."""

    index: int
    key: Key
    event: NewEvent
    stream: str
    subject: str
    body: bytes
    base_id: str
    msg_id: str
    resent: bool = False


class Appender:
    """Publishes batches for the log; `clock` stamps recorded times, which never go back."""

    def __init__(
        self,
        connection: Connection,
        layout: Layout,
        *,
        clock: Callable[[], datetime],
        dedup_window: timedelta,
        ack_timeout: float,
    ) -> None:
        self._conn = connection
        self._layout = layout
        self._clock = clock
        self._window_us = dedup_window // timedelta(microseconds=1)
        self._ack_timeout = ack_timeout
        self._last_us = 0
        self._recent = RecentKeys()
        # Held while stamping and publishing (not while waiting for acks), so that one
        # process's recorded times grow with stream sequence, which time reads rely on.
        self._order = asyncio.Lock()

    async def append(
        self, batch: Sequence[NewEvent], announce: Announce | None = None
    ) -> list[AppendResult]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._ack_timeout
        first_of: dict[Key, int] = {}
        attempts: list[_Attempt] = []
        async with self._order:
            stamp = self._stamp()
            for index, event in enumerate(batch):
                key = (event.tenant, event.bus, event.source, event.id)
                if key not in first_of:
                    first_of[key] = index
                    attempts.append(self._attempt(index, key, event, stamp))
            pending = await self._publish(attempts, stamp)
        results: dict[int, AppendResult] = {}
        backoff = _FIRST_BACKOFF
        while True:
            replies = await self._acks(pending, deadline)
            again, busy = await self._settle(attempts, replies, stamp, results)
            if not again:
                break
            if busy:
                # Waiting on JetStream (a proposal in flight, a leader election): back off.
                await asyncio.sleep(min(backoff, max(0.0, deadline - loop.time())))
                backoff = min(backoff * 2, _MAX_BACKOFF)
            attempts = again
            await self._conn.wait_connected(max(0.0, deadline - loop.time()))
            pending = await self._publish(attempts, stamp)
        out: list[AppendResult] = []
        for index, event in enumerate(batch):
            first = first_of[(event.tenant, event.bus, event.source, event.id)]
            result = results[first]
            out.append(result if first == index else AppendResult(_DUPLICATE, result.position))
        if announce is not None:
            # Durable already: JetStream tells positions and duplicates only in its acks.
            announce(out, stamp.recorded)
        return out

    def _stamp(self) -> records.Stamp:
        now_us = max(to_us(self._clock()), self._last_us)
        self._last_us = now_us
        return records.Stamp(now_us)

    def _attempt(self, index: int, key: Key, event: NewEvent, stamp: records.Stamp) -> _Attempt:
        base_id = message_id(event.bus, event.source, event.id)
        msg_id = base_id
        known = self._recent.get(key)
        if known is not None:
            expired = stamp.recorded_us - known.recorded_us >= self._window_us
            msg_id = f"{base_id}~{known.position}" if expired else known.msg_id
        return _Attempt(
            index,
            key,
            event,
            self._layout.stream(event.tenant),
            self._layout.events_subject(event.tenant, event.bus),
            stamp.body(event),
            base_id,
            msg_id,
        )

    async def _publish(
        self, attempts: list[_Attempt], stamp: records.Stamp
    ) -> list[asyncio.Future[Msg]]:
        futures: list[asyncio.Future[Msg]] = []
        try:
            for attempt in attempts:
                headers = stamp.headers(attempt.event, attempt.msg_id)
                futures.append(await self._conn.publish(attempt.subject, attempt.body, headers))
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        return futures

    async def _acks(
        self, futures: list[asyncio.Future[Msg]], deadline: float
    ) -> list[Msg | ConnectionLost]:
        loop = asyncio.get_running_loop()
        # `wait`, not `wait_for(gather(...))`: on Python 3.11 a gather cancelled by a timeout or
        # by our caller leaves exceptions that nobody retrieves (logged at garbage collection),
        # and a cancellation that meets the answer can be swallowed. Whatever is left unawaited
        # is cancelled here, so no reply arrives at a future nobody looks at.
        try:
            _, late = await asyncio.wait(futures, timeout=max(0.0, deadline - loop.time()))
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        if late:
            for future in futures:
                future.cancel()
            raise JetStreamUnavailable(
                f"JetStream did not acknowledge the batch within {self._ack_timeout:g} s; "
                "some events may be stored, and sending them again is safe"
            )
        out: list[Msg | ConnectionLost] = []
        for future in futures:
            error = future.exception()  # CancelledError if someone else cancelled it
            if error is None:
                out.append(future.result())
            elif isinstance(error, ConnectionLost):
                out.append(error)
            else:
                for rest in futures:
                    if rest.done() and not rest.cancelled():
                        rest.exception()  # retrieved: the first error is raised for all
                raise error
        return out

    async def _settle(
        self,
        attempts: list[_Attempt],
        replies: list[Msg | ConnectionLost],
        stamp: records.Stamp,
        results: dict[int, AppendResult],
    ) -> tuple[list[_Attempt], bool]:
        """Record the outcome of each reply; return the attempts to publish again, and whether
        any of them waits for JetStream to settle (rather than for a new id).

        A publish whose connection broke before its ack is sent again on the next connection.
        If the first one had landed, the second is answered as its duplicate, with this very
        append's recorded time: it is reported as stored.
        """
        again: list[_Attempt] = []
        duplicates: list[tuple[_Attempt, int]] = []
        for attempt, reply in zip(attempts, replies, strict=True):
            if isinstance(reply, ConnectionLost):
                attempt.resent = True
                again.append(attempt)
                continue
            if not reply.data:
                status = reply.headers.get(STATUS) if reply.headers else None
                if status == NO_RESPONDERS:
                    again.append(attempt)  # no stream leader for now
                    continue
                raise JetStreamUnavailable(f"unexpected publish reply status {status}")
            ack = _decode_ack(reply.data)
            if ack.error is not None:
                error = ack.error
                if error.err_code == DUPLICATE_IN_PROCESS or error.code == 503:
                    again.append(attempt)
                    continue
                raise JetStreamApiError(error.code, error.err_code, error.description)
            if ack.duplicate:
                duplicates.append((attempt, ack.seq))
            else:
                results[attempt.index] = AppendResult(_STORED, ack.seq)
                self._recent.put(attempt.key, Known(attempt.msg_id, ack.seq, stamp.recorded_us))
        busy = bool(again)
        originals = await asyncio.gather(
            *(self._recorded_us_at(attempt.stream, seq) for attempt, seq in duplicates)
        )
        for (attempt, seq), recorded_us in zip(duplicates, originals, strict=True):
            if recorded_us is not None and stamp.recorded_us - recorded_us >= self._window_us:
                attempt.msg_id = f"{attempt.base_id}~{seq}"
                again.append(attempt)
                continue
            own = attempt.resent and recorded_us == stamp.recorded_us
            results[attempt.index] = AppendResult(_STORED if own else _DUPLICATE, seq)
            if recorded_us is not None:
                self._recent.put(attempt.key, Known(attempt.msg_id, seq, recorded_us))
        return again, busy

    async def _recorded_us_at(self, stream: str, seq: int) -> int | None:
        """The recorded time of the message at `seq`, or None if it is gone."""
        found = await self._conn.direct_batch(stream, {"seq": seq, "batch": 1})
        if not found or records.sequence_of(found[0]) != seq:
            return None
        return records.recorded_us_of(found[0])

"""The scale-out event log on NATS JetStream: a stream per tenant, a subject per bus.

Positions are stream sequences. Appends are in `appends.py`, trims and erasures in `upkeep.py`;
layout and durability are in docs/scale-out.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

import structlog
from nats.aio.msg import Msg

from stellwerk.clock import to_us, utc_now
from stellwerk.refs import BusRef, TenantName
from stellwerk.seams import (
    DEFAULT_DEDUP_WINDOW,
    Announce,
    AppendResult,
    ErasedEvent,
    EraseHook,
    EraseMatch,
    EventLogError,
    LogClosed,
    LogOverloaded,
    NewEvent,
    StoredEvent,
)
from stellwerk.storage.eventlog.contract import CheckedEventLog
from stellwerk.storage.eventlog.jetstream.appends import Appender
from stellwerk.storage.eventlog.jetstream.upkeep import Upkeep
from stellwerk.storage.jetstream import (
    Connection,
    Layout,
    StreamQueries,
    ensure_stream,
    log_config,
    nothing_left,
    records,
)

_SCAN_BATCH: Final = 256
RECONNECT_GRACE: Final = 2.0  # seconds a new append waits for a lost connection to come back
log = structlog.stdlib.get_logger(__name__)


@dataclass(frozen=True)
class _Open:
    """What an open log works with."""

    conn: Connection
    appender: Appender
    queries: StreamQueries
    upkeep: Upkeep


class JetStreamEventLog(CheckedEventLog):
    """The `EventLog` on JetStream at `url` (a server list may be comma-separated).

    `namespace` prefixes every stream and subject, so installations can share a cluster.
    `replicas` is the stream replication (1, or 3 in a cluster). `dedup_window` becomes each
    stream's `duplicate_window`; JetStream keeps every message id of the window in memory on
    each replica, so that memory grows with the window times the event rate (see
    docs/scale-out.md). Every process on one namespace must use the same `replicas` and
    `dedup_window`: a stream takes the settings of the process that last created it.

    At most `max_pending_events` events and `max_pending_bytes` bytes wait for acks at once;
    beyond that `append` raises `LogOverloaded`, as it does while the connection is down and
    when JetStream has not acknowledged a batch within `ack_timeout` seconds. `time_slack` is
    how far recorded times may run out of sequence order between processes (their clocks'
    skew): time windows look that far past their ends for stragglers. `secure_erase` has
    JetStream overwrite the bytes of erased events (see `upkeep.py`).
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "stellwerk",
        replicas: int = 1,
        dedup_window: timedelta = DEFAULT_DEDUP_WINDOW,
        clock: Callable[[], datetime] = utc_now,
        max_pending_events: int = 50_000,
        max_pending_bytes: int = 64 * 1024 * 1024,
        ack_timeout: float = 10.0,
        request_timeout: float = 5.0,
        time_slack: timedelta = timedelta(seconds=10),
        secure_erase: bool = True,
    ) -> None:
        if replicas < 1:
            raise ValueError(f"replicas must be at least 1, not {replicas}")
        self.layout = Layout(namespace)
        self.replicas = replicas
        self.url = url
        self._dedup_window = dedup_window
        self._clock = clock
        self._max_pending_events = max_pending_events
        self._max_pending_bytes = max_pending_bytes
        self._ack_timeout = ack_timeout
        self._request_timeout = request_timeout
        self._slack_us = time_slack // timedelta(microseconds=1)
        self._secure_erase = secure_erase
        self._open: _Open | None = None
        self._accepting = False
        self._streams: dict[str, asyncio.Task[None]] = {}
        self._known: set[str] = set()
        self._pending_events = 0
        self._pending_bytes = 0
        self._idle = asyncio.Event()
        self._idle.set()

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._open is not None:
            raise EventLogError("the event log was already started")
        conn = Connection(self.url, request_timeout=self._request_timeout, name="stellwerk-log")
        await conn.open()
        queries = StreamQueries(conn)
        appender = Appender(
            conn,
            self.layout,
            clock=self._clock,
            dedup_window=self._dedup_window,
            ack_timeout=self._ack_timeout,
        )
        upkeep = Upkeep(queries, self.layout, secure_erase=self._secure_erase)
        self._open = _Open(conn, appender, queries, upkeep)
        self._accepting = True

    async def close(self) -> None:
        opened = self._open
        if opened is None or not self._accepting:
            return
        self._accepting = False
        try:
            async with asyncio.timeout(self._ack_timeout):
                await self._idle.wait()
        except TimeoutError:
            log.warning("closing the event log with appends unacknowledged")
        for task in self._streams.values():
            task.cancel()
        self._streams.clear()
        self._open = None
        await opened.conn.close()

    async def ping(self) -> None:
        await self._running().conn.api("$JS.API.INFO")

    # -- appending -----------------------------------------------------------------------------

    async def _append(
        self, batch: Sequence[NewEvent], announce: Announce | None
    ) -> list[AppendResult]:
        """Publish the batch and return once JetStream acknowledged every event."""
        opened = self._running()
        if not batch:
            return []
        size = sum(len(event.body) for event in batch)
        if self._pending_events and (
            self._pending_events + len(batch) > self._max_pending_events
            or self._pending_bytes + size > self._max_pending_bytes
        ):
            raise LogOverloaded(
                f"{self._pending_events} events are waiting for JetStream's acknowledgement"
            )
        self._pending_events += len(batch)
        self._pending_bytes += size
        self._idle.clear()
        try:
            # A moment without a connection (a failover to another node) is waited out.
            await opened.conn.wait_connected(min(self._ack_timeout, RECONNECT_GRACE))
            for tenant in {event.tenant for event in batch}:
                await self._ensure_stream(opened.conn, tenant)
            return await opened.appender.append(batch, announce)
        finally:
            self._pending_events -= len(batch)
            self._pending_bytes -= size
            if not self._pending_events:
                self._idle.set()

    async def _ensure_stream(self, conn: Connection, tenant: TenantName) -> None:
        """Create the tenant's stream once per process (concurrent appends share the work)."""
        task = self._streams.get(tenant)
        if task is None:
            task = asyncio.create_task(self._create_stream(conn, tenant))
            self._streams[tenant] = task
        try:
            await asyncio.shield(task)
        except Exception:
            if self._streams.get(tenant) is task:
                del self._streams[tenant]
            raise

    async def _create_stream(self, conn: Connection, tenant: TenantName) -> None:
        config = log_config(
            self.layout.stream(tenant),
            [self.layout.all_events(tenant), self.layout.all_marks(tenant)],
            replicas=self.replicas,
            dedup_window=self._dedup_window,
            metadata={"stellwerk_tenant": tenant},
        )
        await ensure_stream(conn, config)
        self._known.add(tenant)

    # -- reading -------------------------------------------------------------------------------

    async def _read_after(self, ref: BusRef, after: int, limit: int) -> list[StoredEvent]:
        queries = self._running().queries
        tenant, bus = ref.tenant, ref.bus
        if not await self._exists(tenant):
            return []
        stream = self.layout.stream(tenant)
        subject = self.layout.events_subject(tenant, bus)
        out: list[StoredEvent] = []
        start = after + 1
        while len(out) < limit:
            found = await queries.page(stream, subject, start, limit - len(out))
            out.extend(_events(tenant, bus, found))
            if not found or nothing_left(found[-1]):
                break
            start = records.sequence_of(found[-1]) + 1
        return out

    async def _read_window(
        self, ref: BusRef, start: datetime, end: datetime, after: int, limit: int
    ) -> list[StoredEvent]:
        """Events recorded in `[start, end)`: from a binary search for `start` minus the slack
        on, filtered by recorded time, until one is recorded past `end` plus the slack."""
        queries = self._running().queries
        tenant, bus = ref.tenant, ref.bus
        start_us, end_us = to_us(start), to_us(end)
        if start_us >= end_us or not await self._exists(tenant):
            return []
        stream = self.layout.stream(tenant)
        subject = self.layout.events_subject(tenant, bus)
        state = await queries.state(stream)
        if state is None:
            return []
        first = await queries.first_since(stream, subject, start_us - self._slack_us, state)
        seq = max(after + 1, first)
        out: list[StoredEvent] = []
        while True:
            found = await queries.page(stream, subject, seq, max(limit - len(out), _SCAN_BATCH))
            for event in _events(tenant, bus, found):
                recorded_us = to_us(event.recorded_time)
                if recorded_us >= end_us + self._slack_us:
                    return out  # every later event is past the window too
                if start_us <= recorded_us < end_us:
                    out.append(event)
                    if len(out) == limit:
                        return out
            if not found or nothing_left(found[-1]):
                return out
            seq = records.sequence_of(found[-1]) + 1

    async def last_position(self, bus: BusRef) -> int:
        upkeep = self._running().upkeep
        if not await self._exists(bus.tenant):
            return 0
        stream = self.layout.stream(bus.tenant)
        return await upkeep.last_position(stream, self.layout.events_subject(bus.tenant, bus.bus))

    async def _exists(self, tenant: TenantName) -> bool:
        if tenant in self._known:
            return True
        if await self._running().queries.state(self.layout.stream(tenant)) is None:
            return False
        self._known.add(tenant)
        return True

    # -- removing ------------------------------------------------------------------------------

    async def trim(self, older_than: datetime, keep: Mapping[BusRef, int] | None = None) -> int:
        """Purge each tenant's events recorded before `older_than` (see `upkeep.py`).

        The purge goes up to the first event recorded at `older_than` or later, found by a
        binary search; with several gateways whose clocks differ, an event at the border may
        go up to their skew early or late.
        """
        upkeep = self._running().upkeep
        return await upkeep.trim(to_us(older_than), keep or {})

    async def erase(
        self,
        tenant: TenantName,
        bus: str | None,
        needle: bytes,
        matches: EraseMatch,
        before: EraseHook | None = None,
    ) -> list[ErasedEvent]:
        return await self._running().upkeep.erase(tenant, bus, needle, matches, before)

    # -- helpers -------------------------------------------------------------------------------

    def _running(self) -> _Open:
        opened = self._open
        if opened is None or not self._accepting:
            raise LogClosed("the event log is not open")
        return opened


def _events(tenant: TenantName, bus: str, found: list[Msg]) -> list[StoredEvent]:
    out: list[StoredEvent] = []
    for msg in found:
        try:
            out.append(records.stored_event(tenant, bus, msg))
        except records.NotAnEvent:
            log.warning("skipping a message Stellwerk did not write", tenant=tenant, bus=bus)
    return out

"""The scale-out delivery queue on NATS JetStream: lanes in a table, payloads in a stream.

Not a work-queue consumer: the queue takes its time from the caller, skips full targets without
reading their backlog and keeps ordered groups to one delivery at a time, so JetStream serves as
a replicated store with compare-and-set and the scheduling is Stellwerk's (docs/scale-out.md,
"Delivery queue on JetStream").
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

import msgspec
import structlog

from stellwerk.clock import from_us, to_us, utc_now
from stellwerk.refs import BusRef, TenantName
from stellwerk.seams import (
    DEFAULT_ATTEMPT_PAGE,
    Attempt,
    AttemptOutcome,
    CursorConflict,
    DeadLetter,
    DeliveryQueueError,
    ErasedDeliveries,
    LeasedDelivery,
    NewDelivery,
    PayloadMatch,
    QueueClosed,
    QueueDepth,
    RecordedAttempt,
    ReplayCursor,
    TargetKey,
    check_attempt_page,
)
from stellwerk.storage.jetstream import Connection, Put, Stored
from stellwerk.storage.queue.contract import CheckedQueue, check_replay_cursor, check_route_cursor
from stellwerk.storage.queue.jetstream.dead import DeadLetters
from stellwerk.storage.queue.jetstream.history import AttemptStore
from stellwerk.storage.queue.jetstream.index import DeliveryIndex, LaneView
from stellwerk.storage.queue.jetstream.lanes import Lanes
from stellwerk.storage.queue.jetstream.records import (
    DELIVERY_HEADER,
    LaneState,
    MemberMeta,
    QueueLayout,
    ReplayMark,
    RouteCursor,
    decode_cursor,
    decode_dead,
    decode_lane,
    decode_meta,
    decode_replay,
    encode,
    head_state,
    lane_of,
    route_msg_id,
)
from stellwerk.storage.queue.jetstream.store import (
    DeliveryStore,
    QueueUnavailable,
    unavailable_as_queue_error,
)

DEFAULT_DEDUP_WINDOW: Final = timedelta(minutes=10)
SCAN_FAILURE_REMINDER_SECONDS: Final = 60.0
log = structlog.stdlib.get_logger(__name__)


@dataclass(frozen=True)
class _Open:
    conn: Connection
    store: DeliveryStore
    index: DeliveryIndex
    lanes: Lanes
    dead: DeadLetters
    history: AttemptStore


class JetStreamDeliveryQueue(CheckedQueue):
    """The `DeliveryQueue` on JetStream at `url` (a server list may be comma-separated).

    `namespace` prefixes streams and subjects as the event log's does; `replicas` is the
    replication of both streams (3 in a cluster). Every process of one namespace must use the
    same `replicas` and `dedup_window`. `clock` stamps dead letters, redrives and replays and
    measures depth; `lease` takes its time from the caller.
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "stellwerk",
        replicas: int = 1,
        dedup_window: timedelta = DEFAULT_DEDUP_WINDOW,
        ack_timeout: float = 10.0,
        request_timeout: float = 5.0,
        scan_interval: float = 0.1,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.url = url
        self.layout = QueueLayout(namespace)
        self.replicas = replicas
        self.dedup_window = dedup_window
        self._ack_timeout = ack_timeout
        self._request_timeout = request_timeout
        self._scan_interval = scan_interval
        self._clock = clock
        self._open: _Open | None = None
        self._scanner: asyncio.Task[None] | None = None
        self._scanned = 0  # the table sequence the scan has read up to
        self._poked = asyncio.Event()
        self._catching_up = asyncio.Lock()  # the scan and `oldest_pending` both catch up
        self._on_lanes: Callable[[], None] | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._open is not None:
            raise DeliveryQueueError("the delivery queue was already started")
        conn = Connection(self.url, request_timeout=self._request_timeout, name="stellwerk-queue")
        with unavailable_as_queue_error():
            await conn.open()
        try:
            store = DeliveryStore(
                conn, self.layout, replicas=self.replicas, dedup_window=self.dedup_window,
                ack_timeout=self._ack_timeout,
            )  # fmt: skip
            await store.ensure_streams()
            history = AttemptStore(store)
            await history.ensure_stream()
            index = DeliveryIndex()
            self._scanned = 0
            await self._catch_up(store, index)
        except BaseException:
            await conn.close()
            raise
        lanes = Lanes(store, index, self.layout, self.dedup_window)
        self._open = _Open(conn, store, index, lanes, DeadLetters(lanes), history)
        self._scanner = asyncio.create_task(self._scan(store, index), name="delivery-queue-scan")

    async def close(self) -> None:
        opened, self._open = self._open, None
        scanner, self._scanner = self._scanner, None
        if scanner is not None:
            scanner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await scanner
        if opened is not None:
            await opened.conn.close()

    def _running(self) -> _Open:
        if self._open is None:
            raise QueueClosed("the delivery queue is not open")
        return self._open

    # -- the scan that feeds the index ---------------------------------------------------------

    def watch_lanes(self, on_lanes: Callable[[], None]) -> None:
        """Call `on_lanes()` after a scan saw lanes change (new deliveries, retries, releases):
        a worker in this process wakes then, not at its next poll."""
        self._on_lanes = on_lanes

    def poke(self) -> None:
        """Scan now rather than at the next interval: another process routed deliveries."""
        self._poked.set()

    async def _scan(self, store: DeliveryStore, index: DeliveryIndex) -> None:
        # Stops on `close` clearing `_open` as well as on cancellation: Python 3.11's
        # `wait_for` (inside a read) can swallow a cancellation that meets its answer.
        # A scan runs ten times a second: while JetStream is away, its failures are one line
        # as they begin, a reminder a minute, and one line when a scan works again.
        failures = 0
        said = 0.0
        while self._open is not None and self._open.store is store:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._scan_interval):
                    await self._poked.wait()
            self._poked.clear()
            try:
                await self._catch_up(store, index)
            except QueueUnavailable as exc:
                failures += 1
                now = time.monotonic()
                if failures == 1 or now - said >= SCAN_FAILURE_REMINDER_SECONDS:
                    said = now
                    log.warning("delivery_queue_scan_failed", error=str(exc), failures=failures)
                continue
            if failures:
                log.info("delivery_queue_scan_recovered", failures=failures)
                failures = 0

    async def _catch_up(self, store: DeliveryStore, index: DeliveryIndex) -> None:
        layout = self.layout
        lanes = 0
        async with self._catching_up:
            scan = store.scan(layout.table_stream, layout.table_subjects, self._scanned + 1)
            async for page in scan:
                for stored in page:
                    lanes += self._apply(index, stored)
                self._scanned = page[-1].seq
            index.prune(self._scanned)
        if lanes and self._on_lanes is not None:
            self._on_lanes()

    def _apply(self, index: DeliveryIndex, stored: Stored) -> bool:
        """Take one table record into the index; True if it was a lane's."""
        kind, name = self.layout.key_of(stored.subject)
        if kind == "lane":
            index.apply_lane(name, stored.seq, decode_lane(stored.data) if stored.data else None)
            return True
        if kind == "dead":
            record = decode_dead(stored.data) if stored.data else None
            index.apply_dead(int(name), stored.seq, record)
        return False

    # -- routing -------------------------------------------------------------------------------

    async def _route(self, bus: BusRef, position: int, deliveries: Sequence[NewDelivery]) -> None:
        opened = self._running()
        key = self.layout.cursor_key(bus)
        stored = await opened.store.last(key)
        current = decode_cursor(stored.data).position if stored is not None else 0
        check_route_cursor(bus, current, position, deliveries)
        await self._enqueue(opened, deliveries)
        expected = stored.seq if stored is not None else 0
        if await opened.store.put(Put(key, encode(RouteCursor(position)), expected)) is None:
            raise CursorConflict(f"{bus}: another router moved the cursor meanwhile")

    async def cursor(self, bus: BusRef) -> int:
        stored = await self._running().store.last(self.layout.cursor_key(bus))
        return decode_cursor(stored.data).position if stored is not None else 0

    async def _route_replay(
        self,
        tenant: TenantName,
        replay: str,
        seq: int,
        events: int,
        deliveries: Sequence[NewDelivery],
        *,
        after: int,
    ) -> None:
        opened = self._running()
        now_us = to_us(self._clock())
        key = self.layout.replay_key(tenant, replay)
        stored = await opened.store.last(key)
        current = decode_replay(stored.data) if stored is not None else ReplayMark(0, 0)
        check_replay_cursor(tenant, replay, current.seq, after, seq)
        await self._enqueue(opened, deliveries, replay=replay, now_us=now_us)
        mark = ReplayMark(seq, current.replayed + events)
        expected = stored.seq if stored is not None else 0
        if await opened.store.put(Put(key, encode(mark), expected)) is None:
            raise CursorConflict(f"replay {tenant}/{replay}: its cursor moved meanwhile")

    async def replay_cursor(self, tenant: TenantName, replay: str) -> ReplayCursor:
        stored = await self._running().store.last(self.layout.replay_key(tenant, replay))
        if stored is None:
            return ReplayCursor(0, 0)
        mark = decode_replay(stored.data)
        return ReplayCursor(mark.seq, mark.replayed)

    async def _enqueue(
        self,
        opened: _Open,
        deliveries: Sequence[NewDelivery],
        *,
        replay: str | None = None,
        now_us: int | None = None,
    ) -> None:
        """Publish the members, then give each new unordered lane its record and each ordered
        lane that is idle its head. Due at the recorded time, or (replays) at `now_us`."""
        members: list[Put] = []
        metas: list[tuple[str, MemberMeta]] = []
        for d in deliveries:
            lane = lane_of(d, replay)
            due = to_us(d.recorded_time) if now_us is None else now_us
            meta = MemberMeta(
                tenant=d.tenant, bus=d.bus, rule=d.rule, target_id=d.target_id,
                event_id=d.event_id, event_source=d.event_source, position=d.position,
                recorded_us=to_us(d.recorded_time), content_type=d.content_type, due_us=due,
                age_from_us=due, ordering_key=d.ordering_key,
            )  # fmt: skip
            subject = self.layout.member_subject(
                d.tenant, lane, ordered=meta.ordering_key is not None
            )
            header = {DELIVERY_HEADER: encode(meta).decode()}
            members.append(Put(subject, d.payload, msg_id=route_msg_id(d, replay), headers=header))
            metas.append((lane, meta))
        seqs = await opened.store.put_many(members)
        heads: list[tuple[str, LaneState, Put]] = []
        ordered: dict[str, TenantName] = {}
        for (lane, meta), seq in zip(metas, seqs, strict=True):
            assert seq is not None  # members are published without an expected sequence
            if meta.ordering_key is not None:
                ordered[lane] = meta.tenant
                continue
            state = head_state(meta, seq)
            heads.append((lane, state, Put(self.layout.lane_key(lane), encode(state), expected=0)))
        written = await opened.store.put_many([put for _, _, put in heads])
        for (lane, state, _), lane_seq in zip(heads, written, strict=True):
            if lane_seq is not None:  # None: routed before (see the module's docstring)
                opened.index.apply_lane(lane, lane_seq, state)
        await asyncio.gather(
            *(opened.lanes.install(tenant, lane, ordered=True) for lane, tenant in ordered.items())
        )

    # -- leasing and outcomes ------------------------------------------------------------------

    async def _lease(
        self,
        now: datetime,
        limit: int,
        lease_seconds: float,
        per_target_limits: Mapping[TargetKey, int] | None,
    ) -> list[LeasedDelivery]:
        opened = self._running()
        now_us = to_us(now)
        until_us = now_us + int(lease_seconds * 1_000_000)
        chosen = opened.index.take_due(now_us, limit, per_target_limits or {})
        if not chosen:
            return []
        leased = [msgspec.structs.replace(v.state, lease_until_us=until_us) for v in chosen]
        puts = [
            Put(self.layout.lane_key(v.lane), encode(state), expected=v.seq)
            for v, state in zip(chosen, leased, strict=True)
        ]
        # The members are read beside the writes: most writes win, and a lease is then one
        # round trip. A member is immutable, so reading it early reads the same.
        writes = asyncio.ensure_future(opened.store.put_many(puts))
        try:
            seqs, members = await asyncio.gather(
                writes, opened.store.members([v.state.member for v in chosen])
            )
        except BaseException as exc:
            if isinstance(exc, Exception):
                await self._give_back(opened, chosen, writes)
            else:
                writes.cancel()
            for view in chosen:
                opened.index.requeue(view.lane)
            raise
        won: list[LaneView] = []
        lost: list[str] = []
        for view, state, seq in zip(chosen, leased, seqs, strict=True):
            if seq is None:
                lost.append(view.lane)
            else:
                opened.index.apply_lane(view.lane, seq, state)
                won.append(LaneView(view.lane, seq, state))
        # Another process changed these first: read them again so the index catches up now.
        await asyncio.gather(*(opened.lanes.refresh(lane) for lane in lost))
        for lane in lost:
            opened.index.requeue(lane)
        out: list[LeasedDelivery] = []
        for view in won:
            member = members.get(view.state.member)
            if member is None:
                # Its finish was cut short after the message went: finish it now.
                await opened.lanes.finish(view.lane, view.state.head)
                continue
            out.append(_leased(view.state, decode_meta(member.headers[DELIVERY_HEADER]), member))
        return out

    async def _give_back(
        self, opened: _Open, chosen: Sequence[LaneView], writes: asyncio.Future[list[int | None]]
    ) -> None:
        """A lease failed after its writes went out (the members' read failed, say, in a
        leader election): undo the writes that won, so that the deliveries are due again now
        rather than when a lease nobody holds runs out. What cannot be undone runs out."""
        try:
            seqs = await writes
        except Exception:
            return  # no write known to have won
        undo = [(view, seq) for view, seq in zip(chosen, seqs, strict=True) if seq is not None]
        puts = [
            Put(self.layout.lane_key(view.lane), encode(view.state), expected=seq)
            for view, seq in undo
        ]
        try:
            for (view, _), seq in zip(undo, await opened.store.put_many(puts), strict=True):
                if seq is not None:
                    opened.index.apply_lane(view.lane, seq, view.state)
        except Exception as exc:
            log.warning("delivery_queue_lease_not_given_back", error=str(exc), lanes=len(undo))

    # The attempt handed in with an outcome is published beside the outcome's own writes
    # (`history.AttemptStore`); a failure of either fails the call, and the delivery comes
    # again, so history is at least as complete as the outcomes are durable.

    async def ack(self, delivery_id: int, attempt: Attempt | None = None) -> None:
        opened = self._running()
        await self._beside(opened, [attempt], self._finish(opened, delivery_id))

    async def ack_many(self, delivery_ids: Sequence[int], attempts: Sequence[Attempt] = ()) -> None:
        opened = self._running()
        await self._beside(opened, attempts, *(self._finish(opened, i) for i in delivery_ids))

    async def _finish(self, opened: _Open, delivery_id: int) -> None:
        view = await opened.lanes.locate(delivery_id)
        if view is not None:
            await opened.lanes.finish(view.lane, delivery_id)

    async def _beside(
        self, opened: _Open, attempts: Sequence[Attempt | None], *work: Awaitable[object]
    ) -> None:
        # Every write runs to its end before a failure is raised: none is left behind unawaited.
        results = await asyncio.gather(
            opened.history.record(attempts), *work, return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def retry(
        self,
        delivery_id: int,
        next_attempt_at: datetime,
        error: str,
        attempt: Attempt | None = None,
    ) -> None:
        due_us = to_us(next_attempt_at)

        def change(state: LaneState) -> LaneState:
            return msgspec.structs.replace(
                state, attempts=state.attempts + 1, due_us=due_us, last_error=error,
                lease_until_us=0,
            )  # fmt: skip

        opened = self._running()
        await self._beside(opened, [attempt], opened.lanes.change_head(delivery_id, change))

    async def release(self, delivery_ids: Sequence[int]) -> None:
        lanes = self._running().lanes

        def change(state: LaneState) -> LaneState | None:
            return (
                msgspec.structs.replace(state, lease_until_us=0) if state.lease_until_us else None
            )

        await asyncio.gather(*(lanes.change_head(i, change) for i in delivery_ids))

    async def dead_letter(
        self, delivery_id: int, error: str, attempt: Attempt | None = None
    ) -> None:
        opened = self._running()
        await self._beside(opened, [attempt], self._bury(opened, delivery_id, error))

    async def _bury(self, opened: _Open, delivery_id: int, error: str) -> None:
        view = await opened.lanes.locate(delivery_id)
        if view is not None:
            await opened.dead.bury(view, error, to_us(self._clock()))

    # -- delivery history ----------------------------------------------------------------------

    async def event_attempts(self, bus: BusRef, event_id: str) -> list[RecordedAttempt]:
        return await self._running().history.event_attempts(bus, event_id)

    async def target_attempts(
        self,
        bus: BusRef,
        rule: str,
        target_id: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        outcome: AttemptOutcome | None = None,
        after: int = 0,
        limit: int = DEFAULT_ATTEMPT_PAGE,
    ) -> list[RecordedAttempt]:
        check_attempt_page(limit)
        return await self._running().history.target_attempts(
            bus, rule, target_id, since, until, outcome, after, limit
        )

    async def trim_history(self, older_than: datetime) -> int:
        return await self._running().history.trim(older_than)

    # -- dead letters --------------------------------------------------------------------------

    async def _dead_letters(
        self,
        bus: BusRef,
        rule: str | None,
        target_id: str | None,
        after: int,
        limit: int,
    ) -> list[DeadLetter]:
        dead = self._running().dead
        return await dead.page(bus, rule=rule, target_id=target_id, after=after, limit=limit)

    async def redrive(self, bus: BusRef, ids: Sequence[int] | None = None) -> int:
        return await self._running().dead.redrive(bus, ids, to_us(self._clock()))

    async def depth(self) -> list[QueueDepth]:
        opened = self._running()
        now_us = to_us(self._clock())
        rows = opened.index.depth(now_us)
        counts: dict[str, int] = {}
        if any(row.ordered_lanes for row in rows.values()):
            stream = self.layout.members_stream
            by_subject = await opened.store.subject_counts(stream, self.layout.ordered_members)
            counts = {subject.rpartition(".")[2]: n for subject, n in by_subject.items()}
        out = []
        for key in sorted(rows):
            row = rows[key]
            unfinished = row.unordered + sum(counts.get(lane, 1) for lane in row.ordered_lanes)
            in_flight = min(row.in_flight, unfinished)
            oldest = row.oldest_recorded_us
            out.append(
                QueueDepth(
                    key=key,
                    pending=unfinished - in_flight,
                    in_flight=in_flight,
                    dead=row.dead,
                    oldest_pending_seconds=(
                        None if oldest is None else max(0, now_us - oldest) / 1_000_000
                    ),
                )
            )
        return out

    async def oldest_pending(self, bus: BusRef) -> datetime | None:
        # The index is a cache: catch it up first, so that every lane written before this
        # call (before a cursor the caller read, say) is in it.
        opened = self._running()
        await self._catch_up(opened.store, opened.index)
        oldest = opened.index.oldest_recorded_us(bus.tenant, bus.bus)
        return None if oldest is None else from_us(oldest)

    # -- erasure -------------------------------------------------------------------------------

    async def erase(
        self,
        tenant: TenantName,
        bus: str | None,
        positions: Collection[tuple[str, int]],
        needle: bytes,
        matches: PayloadMatch,
    ) -> ErasedDeliveries:
        """Scan the tenant's members a page at a time; erase the dead letters from the index."""
        opened = self._running()
        erased = set(positions)

        def hit(on_bus: str, position: int, payload: bytes, content_type: str) -> bool:
            if bus is not None and on_bus != bus:
                return False
            return (on_bus, position) in erased or (
                needle in payload and matches(payload, content_type)
            )

        pending = dead = 0
        stream = self.layout.members_stream
        async for page in opened.store.scan(stream, self.layout.tenant_members(tenant)):
            for stored in page:
                if DELIVERY_HEADER not in stored.headers:
                    continue  # a finished delivery's marker
                meta = decode_meta(stored.headers[DELIVERY_HEADER])
                if hit(meta.bus, meta.position, stored.data, meta.content_type):
                    pending += await self._erase_member(opened, stored, meta)
        for delivery_id in opened.index.dead_of_tenant(tenant, bus):
            record = await opened.dead.record(delivery_id)
            if record is None or not hit(
                record.bus, record.position, record.payload, record.content_type
            ):
                continue
            if await opened.dead.drop(delivery_id, erase=True):
                dead += 1
        attempts = await opened.history.erase(tenant, bus, erased, needle)
        return ErasedDeliveries(pending, dead, attempts)

    async def _erase_member(self, opened: _Open, stored: Stored, meta: MemberMeta) -> int:
        """Erase one member message; if it heads its lane, the lane moves on. 1 if it went."""
        lane = stored.subject.rpartition(".")[2]
        view = await opened.lanes.refresh(lane)
        if view is not None and view.state.member == stored.seq:
            return int(await opened.lanes.finish(lane, view.state.head, erase=True))
        return int(await opened.store.delete(self.layout.members_stream, stored.seq, erase=True))


def _leased(state: LaneState, meta: MemberMeta, member: Stored) -> LeasedDelivery:
    return LeasedDelivery(
        id=state.head,
        tenant=state.tenant,
        bus=state.bus,
        rule=state.rule,
        target_id=state.target_id,
        event_id=meta.event_id,
        event_source=meta.event_source,
        position=meta.position,
        recorded_time=from_us(meta.recorded_us),
        payload=member.data,
        content_type=meta.content_type,
        attempts=state.attempts,
        ordering_key=meta.ordering_key,
        last_error=state.last_error,
        age_from=None if state.age_from_us == meta.recorded_us else from_us(state.age_from_us),
    )

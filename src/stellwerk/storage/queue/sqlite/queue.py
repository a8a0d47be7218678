"""The embedded delivery queue: its tables in an engine's file (pipeline.db), its writes as jobs.

Every write runs in the engine's writer thread, in the group commit it shares with the archive
store; leases live in memory, since a lost lease is only a redelivery; a run of events without
deliveries moves the router's cursor in memory and is written with a later commit
(docs/storage.md, "The embedded delivery queue").
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import structlog

from stellwerk.clock import from_us, to_us, utc_now
from stellwerk.refs import BusRef, TenantName
from stellwerk.seams import (
    DEFAULT_ATTEMPT_PAGE,
    Attempt,
    AttemptOutcome,
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
from stellwerk.storage.queue.contract import (
    CheckedQueue,
    carries,
    check_replay_cursor,
    check_route_cursor,
)
from stellwerk.storage.queue.sqlite import history, reads, schema
from stellwerk.storage.queue.sqlite.index import QueueIndex
from stellwerk.storage.queue.sqlite.leases import lease
from stellwerk.storage.queue.sqlite.schema import DEAD, READY, WAITING
from stellwerk.storage.sqlite import Engine, Handle, Job, erasing

log = structlog.stdlib.get_logger(__name__)

_T = TypeVar("_T")


class _AckBatch:
    """Acks waiting for the writer together; `job` is the one job that writes them."""

    __slots__ = ("attempts", "ids", "job")

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.attempts: list[Attempt] = []
        self.job: Job[None] | None = None


class SqliteDeliveryQueue(CheckedQueue):
    """The `DeliveryQueue` on an engine: `SqliteDeliveryQueue(engine)` beside the archive store
    (`stellwerk.storage.pipeline`), or `SqliteDeliveryQueue(path)` on an engine of its own.

    `clock` stamps dead letters and redrives and measures depth (a test can move it); `lease`
    takes its time from the caller. `archive_here`: the archive store's tables are in the same
    file (`schema.refer_to_archive` was run on it), so a replayed delivery keeps only its own
    bytes and points at the archived copy for the rest.
    """

    def __init__(
        self,
        where: str | Path | Engine,
        *,
        clock: Callable[[], datetime] = utc_now,
        archive_here: bool = False,
    ) -> None:
        self.engine = where if isinstance(where, Engine) else Engine(where, name="pipeline")
        self.path = self.engine.path
        self._clock = clock
        self._archive_here = archive_here
        self._index = QueueIndex(refer=archive_here)
        self._handle: Handle | None = None
        self._ack_lock = threading.Lock()  # the event loop adds to a batch the writer takes
        self._acks: _AckBatch | None = None
        self._flush_lock = threading.Lock()
        self._flush_queued = False
        self._on_lanes: Callable[[], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._handle is not None:
            raise DeliveryQueueError("the delivery queue was already started")
        index = self._index = QueueIndex(refer=self._archive_here)
        handle = self.engine.handle(
            "the delivery queue",
            closed=QueueClosed,
            failed=DeliveryQueueError,
            on_rollback=index.forget,
            on_change=self._changed_elsewhere,
        )
        self._loop = asyncio.get_running_loop()
        await handle.open(schema.create)
        self._handle = handle

    async def close(self) -> None:
        handle, self._handle = self._handle, None
        if handle is None:
            return
        try:
            # Cursor moves still in memory are written now: a stopped queue keeps them all.
            await handle.write(self._index.write_cursors, synced=True)
        except DeliveryQueueError as exc:
            # A full or read-only disk: what a crash would lose, and no more (docs/storage.md).
            log.warning(
                "the router's newest cursor moves could not be written; those events will be"
                " routed again (they matched no rule)",
                error=str(exc),
            )
        finally:
            await handle.close()

    def watch_lanes(self, on_lanes: Callable[[], None]) -> None:
        """Call `on_lanes` (on this loop) when another process committed to the file: it may
        have routed or redriven deliveries that a worker here should lease."""
        self._on_lanes = on_lanes

    def poke(self) -> None:
        """Another process says it routed: the next lease reads the file again (it notices the
        commit by itself), so only the worker needs waking."""
        if self._on_lanes is not None:
            self._on_lanes()

    def _changed_elsewhere(self) -> None:
        self._index.forget()
        loop, on_lanes = self._loop, self._on_lanes
        if loop is not None and on_lanes is not None:
            loop.call_soon_threadsafe(on_lanes)

    # -- routing -------------------------------------------------------------------------------

    async def _route(self, bus: BusRef, position: int, deliveries: Sequence[NewDelivery]) -> None:
        index = self._index
        if not deliveries:
            # A cursor move alone is not written now: a commit of one page for each routed run
            # cost more than the events (docs/storage.md). Lost in a crash, it makes the
            # router read those events again and find nothing to deliver again.
            with index.cursor_lock:
                current = index.routed.get(bus)
            if current is None:
                current = await self._inside(functools.partial(index.stored_cursor, key=bus))
            check_route_cursor(bus, current, position, deliveries)
            index.moved(bus, position, written=False)
            self._write_cursors_soon()
            return

        def work(conn: sqlite3.Connection) -> None:
            index.refresh(conn)
            check_route_cursor(bus, index.stored_cursor(conn, bus), position, deliveries)
            self._opened().grew(index.enqueue(conn, deliveries, None))
            conn.execute(schema.SET_CURSOR, (bus.tenant, bus.bus, position))
            index.moved(bus, position, written=True)

        await self._write(work, synced=False)

    def _write_cursors_soon(self) -> None:
        with self._flush_lock:
            if self._flush_queued:
                return
            self._flush_queued = True
        self._opened().later(self._write_cursors)

    def _write_cursors(self, conn: sqlite3.Connection) -> None:
        with self._flush_lock:
            self._flush_queued = False
        self._index.write_cursors(conn)

    async def cursor(self, bus: BusRef) -> int:
        # Synced: retention trims the log below this, so it must not go back in a power loss.
        # (A move still in memory may: it passed only events that matched nothing.)
        return await self._inside(
            functools.partial(self._index.stored_cursor, key=bus), synced=True
        )

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
        now_us = to_us(self._clock())
        index = self._index

        def work(conn: sqlite3.Connection) -> None:
            index.refresh(conn)
            current = reads.replay_cursor(conn, tenant, replay)
            check_replay_cursor(tenant, replay, current.seq, after, seq)
            self._opened().grew(index.enqueue(conn, deliveries, now_us))
            conn.execute(schema.MOVE_REPLAY_CURSOR, (tenant, replay, seq, events))

        await self._write(work, synced=False)

    async def replay_cursor(self, tenant: TenantName, replay: str) -> ReplayCursor:
        # Synced: a replay is recorded as finished with the count read here, and must not lose
        # its last batches to a power failure after that.
        return await self._inside(
            functools.partial(reads.replay_cursor, tenant=tenant, replay=replay), synced=True
        )

    # -- leasing and outcomes ------------------------------------------------------------------

    async def _lease(
        self,
        now: datetime,
        limit: int,
        lease_seconds: float,
        per_target_limits: Mapping[TargetKey, int] | None,
    ) -> list[LeasedDelivery]:
        now_us = to_us(now)
        until_us = now_us + int(lease_seconds * 1_000_000)
        # Reads only, in the writer thread (the index is the writer's): it never waits for a
        # write's commit.
        return await self._inside(
            functools.partial(
                lease,
                index=self._index,
                now_us=now_us,
                until_us=until_us,
                limit=limit,
                per_target_limits=per_target_limits or {},
            )
        )

    async def ack(self, delivery_id: int, attempt: Attempt | None = None) -> None:
        # Acks that arrive while one is waiting for the writer join it: one job (and one
        # statement) for all of them instead of one each. Each caller still returns only after
        # the commit that holds its ack.
        handle = self._opened()
        with self._ack_lock:
            batch = self._acks
            fresh = batch is None
            if batch is None:
                batch = self._acks = _AckBatch()
                batch.job = handle.job(
                    functools.partial(self._ack_batch, batch), writes=True, synced=False
                )
            batch.ids.append(delivery_id)
            if attempt is not None:
                batch.attempts.append(attempt)
        job = batch.job
        assert job is not None
        assert job.future is not None
        if fresh:
            try:
                await handle.submit(job)
            except BaseException:
                with self._ack_lock:
                    if self._acks is batch:
                        self._acks = None
                raise
        await asyncio.shield(job.future)

    async def ack_many(self, delivery_ids: Sequence[int], attempts: Sequence[Attempt] = ()) -> None:
        if delivery_ids:
            ids = list(delivery_ids)
            index = self._index

            def work(conn: sqlite3.Connection) -> None:
                index.remove(conn, ids)
                history.record(conn, index, attempts)

            await self._write(work, synced=False)

    def _ack_batch(self, batch: _AckBatch, conn: sqlite3.Connection) -> None:
        with self._ack_lock:
            if self._acks is batch:
                self._acks = None  # later acks start a batch of their own
            ids = list(batch.ids)
            attempts = list(batch.attempts)
        self._index.remove(conn, ids)
        history.record(conn, self._index, attempts)

    async def retry(
        self,
        delivery_id: int,
        next_attempt_at: datetime,
        error: str,
        attempt: Attempt | None = None,
    ) -> None:
        due_us = to_us(next_attempt_at)
        index = self._index

        def work(conn: sqlite3.Connection) -> None:
            index.unlease(delivery_id)
            row = conn.execute(
                "UPDATE deliveries SET leased = 0, due_us = ?, attempts = attempts + 1,"
                " last_error = ? WHERE id = ? AND state = 0 RETURNING target",
                (due_us, error, delivery_id),
            ).fetchone()
            if row is not None:
                index.lower(row[0], due_us)
            if attempt is not None:
                history.record(conn, index, [attempt])

        await self._write(work, synced=False)

    async def release(self, delivery_ids: Sequence[int]) -> None:
        if not delivery_ids:
            return
        index = self._index

        def work(conn: sqlite3.Connection) -> None:
            # A leased row kept its due time, so giving it back only forgets the lease.
            for delivery_id in delivery_ids:
                if delivery_id not in index.leases:
                    continue
                index.unlease(delivery_id)
                row = conn.execute(
                    "SELECT target, due_us FROM deliveries WHERE id = ? AND state = 0",
                    (delivery_id,),
                ).fetchone()
                if row is not None:
                    index.lower(row[0], row[1])

        await self._inside(work)

    async def dead_letter(
        self, delivery_id: int, error: str, attempt: Attempt | None = None
    ) -> None:
        dead_us = to_us(self._clock())
        index = self._index

        def work(conn: sqlite3.Connection) -> None:
            index.unlease(delivery_id)
            row = conn.execute(
                "SELECT target, state, ordering_key FROM deliveries WHERE id = ?", (delivery_id,)
            ).fetchone()
            if row is None or row[1] == DEAD:
                return
            if attempt is not None:
                history.record(conn, index, [attempt])
            conn.execute(
                "UPDATE deliveries SET state = 2, leased = 0, attempts = attempts + 1,"
                " last_error = ?, dead_us = ? WHERE id = ?",
                (error, dead_us, delivery_id),
            )
            if row[1] == READY and row[2] is not None:
                index.promote(conn, row[0], row[2])

        await self._write(work, synced=False)

    # -- dead letters --------------------------------------------------------------------------

    async def _dead_letters(
        self,
        bus: BusRef,
        rule: str | None,
        target_id: str | None,
        after: int,
        limit: int,
    ) -> list[DeadLetter]:
        return await self._opened().read(
            functools.partial(
                reads.dead_letters,
                bus=bus, rule=rule, target_id=target_id, after=after, limit=limit,
            )
        )  # fmt: skip

    async def redrive(self, bus: BusRef, ids: Sequence[int] | None = None) -> int:
        now_us = to_us(self._clock())
        wanted = None if ids is None else set(ids)
        index = self._index

        def work(conn: sqlite3.Connection) -> int:
            index.refresh(conn)
            rows = conn.execute(
                "SELECT d.id, d.target, d.ordering_key FROM targets AS t"
                " JOIN deliveries AS d ON d.target = t.target AND d.state = 2"
                " WHERE t.tenant = ? AND t.bus = ? ORDER BY d.id",
                (bus.tenant, bus.bus),
            ).fetchall()
            moved = 0
            for delivery_id, target, ordering_key in rows:
                if wanted is not None and delivery_id not in wanted:
                    continue
                state = READY
                if (
                    ordering_key is not None
                    and conn.execute(schema.GROUP_BUSY, (target, ordering_key)).fetchone()
                ):
                    state = WAITING
                conn.execute(
                    "UPDATE deliveries SET state = ?, due_us = ?, age_from_us = ?, leased = 0,"
                    " attempts = 0, dead_us = NULL WHERE id = ?",
                    (state, now_us, now_us, delivery_id),
                )
                if state == READY:
                    index.lower(target, now_us)
                moved += 1
            return moved

        # Synced: an operator was told these deliveries are on their way again.
        return await self._write(work, synced=True)

    # -- delivery history ----------------------------------------------------------------------

    async def event_attempts(self, bus: BusRef, event_id: str) -> list[RecordedAttempt]:
        return await self._opened().read(
            functools.partial(history.event_attempts, bus=bus, event_id=event_id)
        )

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
        return await self._opened().read(
            functools.partial(
                history.target_attempts,
                bus=bus, rule=rule, target_id=target_id, since=since, until=until,
                outcome=outcome, after=after, limit=limit,
            )
        )  # fmt: skip

    async def trim_history(self, older_than: datetime) -> int:
        bound = await self._opened().read(
            functools.partial(history.trim_bound, older_than_us=to_us(older_than))
        )
        trimmed = 0
        # A chunk per write, so deliveries' writes get their turn between them.
        while chunk := await self._write(
            functools.partial(history.trim_chunk, bound=bound), synced=False
        ):
            trimmed += chunk
        return trimmed

    async def depth(self) -> list[QueueDepth]:
        now_us = to_us(self._clock())
        return await self._opened().read(
            functools.partial(reads.depth, index=self._index, now_us=now_us)
        )

    async def oldest_pending(self, bus: BusRef) -> datetime | None:
        oldest = await self._opened().read(functools.partial(reads.oldest_pending, bus=bus))
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
        """Find the deliveries on a reader a page at a time; remove each page's in the writer."""
        erased = set(positions)
        pending = dead = 0
        after = 0
        while True:
            page = await self._opened().read(
                functools.partial(reads.erase_page, tenant=tenant, bus=bus, after=after)
            )
            if not page:
                attempts = await self._erase_attempts(tenant, bus, erased, needle)
                return ErasedDeliveries(pending, dead, attempts)
            after = page[-1][0]
            ids = [
                delivery_id
                for delivery_id, on_bus, position, payload, content_type in page
                if (on_bus, position) in erased
                or (needle in payload and matches(payload, content_type))
            ]
            if ids:
                # Synced: an erasure that was reported done must not come back.
                states = await self._write(functools.partial(self._erase_ids, ids=ids), synced=True)
                dead += states[DEAD]
                pending += states.total() - states[DEAD]

    async def _erase_attempts(
        self, tenant: TenantName, bus: str | None, erased: set[tuple[str, int]], needle: bytes
    ) -> int:
        """The history of erased positions, and attempts whose answer or error holds the
        value (a receiver that echoed it)."""
        removed = 0
        after: int | None = 0
        while after is not None:
            after, page = await self._opened().read(
                functools.partial(history.erase_page, tenant=tenant, bus=bus, after=after)
            )
            ids = [
                attempt_id
                for attempt_id, on_bus, position, error, excerpt in page
                if (on_bus, position) in erased
                or carries(needle, excerpt)
                or (error is not None and carries(needle, error))
            ]
            if ids:
                removed += await self._write(
                    functools.partial(self._erase_attempt_ids, ids=ids), synced=True
                )
        return removed

    def _erase_attempt_ids(self, conn: sqlite3.Connection, ids: Sequence[int]) -> int:
        with erasing(conn):
            return history.erase_ids(conn, ids)

    def _erase_ids(self, conn: sqlite3.Connection, ids: Sequence[int]) -> Counter[int]:
        with erasing(conn):
            return self._index.remove(conn, ids)

    # -- the engine ----------------------------------------------------------------------------

    def _opened(self) -> Handle:
        handle = self._handle
        if handle is None:
            raise QueueClosed("the delivery queue is not open")
        return handle

    async def _write(self, work: Callable[[sqlite3.Connection], _T], *, synced: bool) -> _T:
        return await self._opened().write(work, synced=synced)

    async def _inside(
        self, work: Callable[[sqlite3.Connection], _T], *, synced: bool = False
    ) -> _T:
        return await self._opened().inside(work, synced=synced)

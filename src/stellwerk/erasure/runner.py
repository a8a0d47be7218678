"""The erasure runner: removes a person's data from every store that keeps events.

How it is shaped and why: docs/erasure.md ("stellwerk.erasure.runner").
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Final

import msgspec
import structlog
from prometheus_client import Counter

from stellwerk.erasure.criterion import Criterion
from stellwerk.erasure.suppression import Suppressions
from stellwerk.ops import Metrics
from stellwerk.refs import BusRef, TenantId, TenantName
from stellwerk.seams import ArchiveStore, ErasedEvent, EventLog, QueueErasure
from stellwerk.storage.control import ControlPlane, ErasureRecord, ErasureState

log = structlog.get_logger("stellwerk.erasure")

STORES: Final = (
    "log", "archives", "failed_events", "deliveries", "dead_letters", "attempts",
)  # fmt: skip
DEFAULT_CATCH_UP_SECONDS: Final = 10.0
Key = tuple[str, str, str]  # (bus, source, id)


class ErasureMetrics:
    def __init__(self, metrics: Metrics) -> None:
        self.finished = Counter(
            "stellwerk_erasures_total",
            "Erasures finished, by outcome (completed or failed).",
            ["state"],
            registry=metrics.registry,
        )
        self.erased = Counter(
            "stellwerk_erasure_erased_total",
            "Events and deliveries removed by erasures, by store.",
            ["store"],
            registry=metrics.registry,
        )


class ErasureRunner:
    """Runs erasures in background tasks of this process; `start` resumes unfinished ones.

    `catch_up_seconds` bounds the wait for the router and the archiver to pass the erased
    positions: when the erased events are a bus's newest, nothing moves their cursors past them,
    and a batch still in flight is done within that time anyway.
    """

    def __init__(
        self,
        control: ControlPlane,
        event_log: EventLog,
        queue: QueueErasure,
        archive_store: ArchiveStore | None,
        *,
        suppressions: Suppressions | None = None,
        metrics: ErasureMetrics | None = None,
        catch_up_seconds: float = DEFAULT_CATCH_UP_SECONDS,
        poll_seconds: float = 0.05,
    ) -> None:
        self.control = control
        self.event_log = event_log
        self.queue = queue
        self.archive_store = archive_store
        self.suppressions = suppressions
        self.metrics = metrics
        self.catch_up_seconds = catch_up_seconds
        self.poll_seconds = poll_seconds
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._closed = False

    async def request(
        self,
        tenant_id: TenantId,
        tenant: TenantName,
        *,
        bus: str | None,
        criterion: Criterion,
        suppress: bool,
        requested_by: str | None,
    ) -> ErasureRecord:
        """Record the erasure (the audit entry) and start it; it runs on in the background."""
        record = await self.control.erasures.create(
            tenant_id,
            bus=bus,
            criterion=msgspec.to_builtins(criterion),
            suppress=suppress,
            requested_by=requested_by,
        )
        self._spawn(tenant, record)
        return record

    def start(self) -> None:
        """Resume, in the background, the erasures a stop cut short (not after `close`)."""
        if self._closed:
            return
        self._tasks["resume"] = asyncio.create_task(self._resume(), name="erasure-resume")

    async def close(self) -> None:
        """Stop the erasures under way; they stay `running` and resume at the next start."""
        self._closed = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _resume(self) -> None:
        try:
            unfinished = await self.control.erasures.unfinished()
        except Exception:
            log.exception("erasure_resume_failed")  # they resume at the next start
            return
        for tenant, record in unfinished:
            if record.id not in self._tasks:
                log.info("erasure_resumed", erasure=record.id, tenant=tenant)
                self._spawn(tenant, record)

    def _spawn(self, tenant: TenantName, record: ErasureRecord) -> None:
        if self._closed:
            return  # recorded as running: the next start resumes it
        task = asyncio.create_task(self._run(tenant, record), name=f"erasure-{record.id}")
        self._tasks[record.id] = task
        task.add_done_callback(lambda _: self._tasks.pop(record.id, None))

    async def _run(self, tenant: TenantName, record: ErasureRecord) -> None:
        erasure = _Erasure(self, tenant, record)
        state, error = ErasureState.COMPLETED, None
        try:
            await erasure.run()
        except Exception as exc:
            log.exception("erasure_failed", erasure=record.id, tenant=tenant)
            state, error = ErasureState.FAILED, f"{type(exc).__name__}: {exc}"
        try:
            await self.control.erasures.finish(record.id, state, erasure.counts, error)
        except Exception:
            # The entry stays `running`: the next start runs the erasure again and records it.
            log.exception("erasure_not_recorded", erasure=record.id, tenant=tenant)
            return
        if self.metrics is not None:
            self.metrics.finished.labels(str(state)).inc()
        log.info("erasure_finished", erasure=record.id, tenant=tenant, state=str(state))


class _Erasure:
    """One erasure's run: its criterion, counts so far, and the positions it erased."""

    def __init__(self, runner: ErasureRunner, tenant: TenantName, record: ErasureRecord) -> None:
        self.runner = runner
        self.tenant = tenant
        self.record = record
        self.criterion = msgspec.convert(record.criterion, Criterion)
        self.counts = {store: record.counts.get(store, 0) for store in STORES}
        self.positions: set[tuple[str, int]] = set()
        self.tops: dict[str, int] = {}  # bus -> the highest position erased from the log

    async def run(self) -> None:
        await self._erase_log()
        await self._erase_archives()
        await self._erase_failed_events()
        await self._erase_deliveries()

    async def _erase_log(self) -> None:
        runner, record = self.runner, self.record
        base = self.counts["log"]
        done = 0

        async def before(chunk: Sequence[ErasedEvent]) -> None:
            nonlocal done
            await self._suppress((e.bus, e.source, e.id) for e in chunk)
            # The chunks before this one are erased by now.
            await runner.control.erasures.record_counts(
                record.id, {**self.counts, "log": base + done}
            )
            done += len(chunk)

        erased = await runner.event_log.erase(
            self.tenant, record.bus, self.criterion.needle, self.criterion.matches_stored, before
        )
        for event in erased:
            self.positions.add((event.bus, event.position))
            self.tops[event.bus] = max(self.tops.get(event.bus, 0), event.position)
        await self._count(log=len(erased))

    async def _erase_archives(self) -> None:
        runner, record = self.runner, self.record
        if runner.archive_store is None:
            return
        bus_of: dict[str, str] = {}
        for bus in await self._buses():
            for archive in await runner.control.archives.for_bus(record.tenant_id, bus):
                bus_of[archive.uid] = bus
        if not bus_of:
            return
        archives = runner.archive_store
        await self._catch_up(archives.cursor, set(bus_of.values()))
        erased = await archives.erase(
            list(bus_of), self.criterion.needle, self.criterion.matches_stored
        )
        await self._suppress((bus_of[e.uid], e.source, e.id) for e in erased)
        self.positions.update((bus_of[e.uid], e.position) for e in erased)
        await self._count(archives=len(erased))

    async def _erase_failed_events(self) -> None:
        record = self.record
        erased = await self.runner.control.failed_events.erase(
            record.tenant_id, record.bus, self.criterion.needle, self.criterion.matches_event
        )
        await self._suppress((r.bus, r.source, r.event_id) for r in erased)
        await self._count(failed_events=len(erased))

    async def _erase_deliveries(self) -> None:
        queue = self.runner.queue
        await self._catch_up(queue.cursor, set(self.tops))
        erased = await queue.erase(
            self.tenant,
            self.record.bus,
            self.positions,
            self.criterion.payload_needle,
            self.criterion.matches_payload,
        )
        await self._count(
            deliveries=erased.pending, dead_letters=erased.dead, attempts=erased.attempts
        )

    async def _buses(self) -> list[str]:
        if self.record.bus is not None:
            return [self.record.bus]
        return [b.name for b in await self.runner.control.list_buses(self.record.tenant_id)]

    async def _catch_up(
        self, cursor: Callable[[BusRef], Awaitable[int]], buses: Iterable[str]
    ) -> None:
        """Wait (bounded) until a consumer's cursor passed the positions erased from the log."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.runner.catch_up_seconds
        for bus in buses:
            top = self.tops.get(bus)
            if top is None:
                continue
            # The cursor may live in another process: poll it.
            while await cursor(BusRef(self.tenant, bus)) < top:
                if loop.time() >= deadline:
                    return
                await asyncio.sleep(self.runner.poll_seconds)

    async def _suppress(self, keys: Iterable[Key]) -> None:
        if not self.record.suppress:
            return
        wanted = list(keys)
        if not wanted:
            return
        runner = self.runner
        await runner.control.erasures.suppress(self.record.tenant_id, self.record.id, wanted)
        if runner.suppressions is not None:
            for bus in {bus for bus, _, _ in wanted}:
                # Other processes hear of it from the control plane (`Change("suppression")`).
                runner.suppressions.forget(self.record.tenant_id, bus)

    async def _count(self, **erased: int) -> None:
        """A step is done: add what it erased (per store) and write the counts."""
        runner = self.runner
        for store, count in erased.items():
            self.counts[store] += count
            if runner.metrics is not None:
                runner.metrics.erased.labels(store).inc(count)
        await runner.control.erasures.record_counts(self.record.id, self.counts)

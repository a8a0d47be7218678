"""The services one process runs, opened and closed together by the composition root."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog

from stellwerk.api.middleware.auth import Authenticator
from stellwerk.config import Role, Settings
from stellwerk.delivery.bus_access import BusAccess
from stellwerk.delivery.metrics import DeliveryMetrics
from stellwerk.delivery.registry import TargetRegistry
from stellwerk.delivery.targets import SessionPool
from stellwerk.delivery.worker import DeliveryWorker
from stellwerk.erasure.runner import ErasureRunner
from stellwerk.erasure.suppression import Suppressions
from stellwerk.ingest.binding import BindingLimits
from stellwerk.ingest.metrics import IngestMetrics
from stellwerk.ops.metrics import Metrics
from stellwerk.ratelimit import TokenBuckets
from stellwerk.retention import Retention
from stellwerk.routing.archiver import Archiver
from stellwerk.routing.replay import ReplayRunner
from stellwerk.routing.router import Router
from stellwerk.routing.rulebook import RuleBook
from stellwerk.seams import (
    ArchiveStore,
    Change,
    DeliveryQueue,
    EventLog,
    Leases,
    Signals,
    while_held,
)
from stellwerk.storage import LogWatch
from stellwerk.storage.control import BusDirectory, ControlPlane

DEPTH_REFRESH_SECONDS = 5.0
SCHEDULER_LEASE = "scheduler"
# Loops that end by themselves once stopped, and how long close() lets them.
STOP_BY_FLAG = frozenset({"router", "archiver"})
STOP_GRACE_SECONDS = 10.0


def _idle() -> asyncio.Event:
    event = asyncio.Event()
    event.set()
    return event


log = structlog.get_logger("stellwerk")


@dataclass
class Services:
    settings: Settings
    control: ControlPlane
    authenticator: Authenticator
    metrics: Metrics
    event_log: EventLog
    buses: BusDirectory
    ingest_metrics: IngestMetrics
    binding_limits: BindingLimits
    event_rate: TokenBuckets
    targets: TargetRegistry
    log_watch: LogWatch
    queue: DeliveryQueue
    rulebook: RuleBook
    router: Router
    worker: DeliveryWorker
    delivery_metrics: DeliveryMetrics
    session_pool: SessionPool
    bus_access: BusAccess
    retention: Retention
    archive_store: ArchiveStore
    archiver: Archiver
    replays: ReplayRunner
    suppressions: Suppressions
    erasures: ErasureRunner
    signals: Signals
    leases: Leases
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _scheduling: asyncio.Event = field(default_factory=_idle)  # set: the scheduler's work ended
    _closing: bool = False

    def runs(self, role: Role) -> bool:
        """Whether this process plays `role` (every role does, in `--role all`)."""
        return self.settings.role in (Role.ALL, role)

    async def rules_changed(self, tenant_id: str, bus: str | None) -> None:
        """A rule, bus or connection changed: routing and delivery use it from now on."""
        await self.changed(Change("rules", tenant_id, bus))

    async def changed(self, change: Change) -> None:
        """Take in a change of configuration here, then tell the other processes."""
        await self.apply(change)
        await self.signals.changed(change)

    async def apply(self, change: Change) -> None:
        """Take in a change made here or, through the signals, in another process."""
        tenant, bus, name = change.tenant, change.bus, change.name
        match change.kind:
            case "rules":
                await self.rulebook.reload(tenant, bus)
            case "bus":
                if bus is not None:
                    self.buses.forget_bus(tenant, bus)
                await self.rulebook.reload(tenant, bus)
            case "schema":
                if name is not None:
                    self.buses.forget_schema(tenant, name)
            case "grant":
                if bus is not None and name is not None:
                    self.bus_access.forget(tenant, bus, name)
            case "key":
                if name is not None:
                    self.authenticator.forget(name)
            case "suppression":
                if bus is not None:
                    self.suppressions.forget(tenant, bus)
            case "archive":
                await self.archiver.reload()
            case "replay":
                self.replays.notify()
            case "replay_cancelled":
                if name is not None:
                    self.replays.cancel(tenant, name)

    async def resync(self) -> None:
        """Signals may have been missed (the connection to NATS broke): reload what is cached
        without a time to live. Caches with one expire on their own."""
        try:
            await self.rulebook.load()
            await self.archiver.reload()
        except Exception:
            log.exception("resync_failed")  # the next reconnect or change tries again
        self.replays.notify()

    async def ping(self) -> None:
        """Raise if a store this process needs does not answer."""
        await self.control.ping()
        await self.event_log.ping()

    def start(self) -> None:
        """Start this process's roles in the background."""
        self._tasks = []
        if self.runs(Role.ROUTER):
            self._spawn(self.router.run(), "router")
            self._spawn(self.archiver.run(), "archiver")
        if self.runs(Role.DELIVERY):
            self._spawn(self.worker.run(), "delivery-worker")
            self._spawn(self._refresh_depth(), "queue-depth")
        if self.runs(Role.SCHEDULER):
            # One scheduler at a time (a lease); the others stand by and take over.
            self._spawn(while_held(self.leases, SCHEDULER_LEASE, self._schedule), "scheduler")

    async def _schedule(self) -> None:
        """The scheduler's work: retention, replays, and erasures a stop cut short."""
        if self._closing:
            return
        self._scheduling.clear()
        self.retention.restart()  # after a lease lost and regained
        try:
            self.erasures.start()
            await asyncio.gather(self.retention.run(), self.replays.run())
        finally:
            self.replays.stop()
            self.retention.stop()
            self._scheduling.set()

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks.append(asyncio.create_task(work, name=name))

    async def _refresh_depth(self) -> None:
        while True:
            self.delivery_metrics.set_depth(await self.queue.depth())
            await asyncio.sleep(DEPTH_REFRESH_SECONDS)

    async def close(self) -> None:
        # First ask every loop to stop and let it finish the step it is in: a control-plane
        # query cancelled halfway leaves SQLAlchemy's aiosqlite adapter closing its connection
        # forever (seen as tests whose event loop never shut down). Then cancel what is left.
        self._closing = True
        self.router.stop()
        self.archiver.stop()
        self.replays.close()
        self.retention.stop()
        await self.worker.stop(grace=min(10.0, self.settings.shutdown_timeout_seconds))
        scheduled = asyncio.ensure_future(self._scheduling.wait())
        stopping: list[asyncio.Future[Any]] = [scheduled]
        stopping += [t for t in self._tasks if t.get_name() in STOP_BY_FLAG]
        await asyncio.wait(stopping, timeout=STOP_GRACE_SECONDS)
        scheduled.cancel()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        # After the scheduler's task: until then it could still start resuming erasures, and a
        # task left querying a closed control plane hangs the loop's shutdown.
        await self.erasures.close()
        try:
            await self.leases.close()  # after the work it guards stopped: successors go now
            await self.signals.close()
            await self.rulebook.close()
            await self.session_pool.close()
            await self.queue.close()
            await self.archive_store.close()
            await self.event_log.close()
        finally:
            await self.control.close()

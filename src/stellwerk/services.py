"""The services one process runs, opened and closed together by the composition root."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

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
from stellwerk.storage.archives import ArchiveStore
from stellwerk.storage.control import ControlPlane
from stellwerk.storage.control.directory import BusDirectory
from stellwerk.storage.deliveries import DeliveryQueue
from stellwerk.storage.eventlog import EventLog
from stellwerk.storage.watch import LogWatch

DEPTH_REFRESH_SECONDS = 5.0


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
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def rules_changed(self, tenant_id: str, bus: str | None) -> None:
        """A rule, bus or connection changed: routing and delivery use it from now on."""
        await self.rulebook.reload(tenant_id, bus)

    async def ping(self) -> None:
        """Raise if a store this process needs does not answer."""
        await self.control.ping()
        await self.event_log.ping()

    def start(self) -> None:
        """Start routing and delivering in the background."""
        self._tasks = [
            asyncio.create_task(self.router.run(), name="router"),
            asyncio.create_task(self.worker.run(), name="delivery-worker"),
            asyncio.create_task(self._refresh_depth(), name="queue-depth"),
            asyncio.create_task(self.retention.run(), name="retention"),
            asyncio.create_task(self.archiver.run(), name="archiver"),
        ]
        if self.settings.role in (Role.ALL, Role.SCHEDULER):
            self._tasks.append(asyncio.create_task(self.replays.run(), name="replays"))
            self.erasures.start()  # resume the erasures a stop cut short

    async def _refresh_depth(self) -> None:
        while True:
            self.delivery_metrics.set_depth(await self.queue.depth())
            await asyncio.sleep(DEPTH_REFRESH_SECONDS)

    async def close(self) -> None:
        self.router.stop()
        self.archiver.stop()
        self.replays.stop()
        await self.erasures.close()
        await self.worker.stop(grace=min(10.0, self.settings.shutdown_timeout_seconds))
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        try:
            await self.rulebook.close()
            await self.session_pool.close()
            await self.queue.close()
            await self.archive_store.close()
            await self.event_log.close()
        finally:
            await self.control.close()

"""The services one process runs, opened and closed together by the composition root."""

from __future__ import annotations

from dataclasses import dataclass

from stellwerk.api.middleware.auth import Authenticator
from stellwerk.config import Settings
from stellwerk.delivery.registry import TargetRegistry
from stellwerk.ingest.binding import BindingLimits
from stellwerk.ingest.metrics import IngestMetrics
from stellwerk.ops.metrics import Metrics
from stellwerk.ratelimit import TokenBuckets
from stellwerk.rules.changes import RuleChanges
from stellwerk.storage.control import ControlPlane
from stellwerk.storage.control.directory import BusDirectory
from stellwerk.storage.eventlog import EventLog
from stellwerk.storage.watch import LogWatch


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
    rule_changes: RuleChanges
    log_watch: LogWatch

    def rules_changed(self, tenant_id: str, bus: str) -> None:
        self.rule_changes.notify(tenant_id, bus)

    async def ping(self) -> None:
        """Raise if a store this process needs does not answer."""
        await self.control.ping()
        await self.event_log.ping()

    async def close(self) -> None:
        try:
            await self.event_log.close()
        finally:
            await self.control.close()

"""The sites capability at work in one process: its peers and endpoints; in gateways, the hold
on ingest answers for synchronous replication; in routers, the standby that keeps a site from
routing the buses another site is active for; in the scheduler role (one process of the
deployment at a time), the replicator and the endpoints' failover loop."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from stellwerk.capability import CapabilityContext, Duty, Role
from stellwerk.secrets import SecretBox
from stellwerk.service import Platform
from stellwerk.sites.endpoints import Endpoints, OfferedEndpoints
from stellwerk.sites.failover import Failover, FailoverMetrics
from stellwerk.sites.link import PeerLink
from stellwerk.sites.peers import Peers
from stellwerk.sites.replication import ReplicationMetrics, Replicator
from stellwerk.sites.standby import SiteStandby
from stellwerk.sites.store import CHANGES, SitesStore
from stellwerk.sites.stream import PeerStreams
from stellwerk.sites.sync import SyncMetrics, SyncReplication
from stellwerk.sites.tables import VERSION_TABLE

NAME: Final = "sites"
MIGRATIONS: Final = Path(__file__).parent / "migrations"
# What the pairs' shared secrets are sealed with, derived from the master key.
SEALING_PURPOSE: Final = "sites peer secrets"


class SitesOpened:
    def __init__(self, context: CapabilityContext) -> None:
        platform = context.platform
        registry = context.metrics.registry
        self.platform: Platform = platform
        self.site = context.settings.site
        self.max_body = context.settings.max_body_bytes  # as the app's body limit
        self.store = SitesStore(context.database)
        box = SecretBox(context.key(SEALING_PURPOSE))
        self.peers = Peers(platform, self.store, box, context.outgoing, self.site)
        link = PeerLink(self.peers, context.outgoing)
        self.sync = SyncReplication(
            platform,
            self.store,
            link,
            SyncMetrics(registry),
            PeerStreams(self.peers, context.outgoing),
        )
        self.endpoints = Endpoints(platform, self.store, self.peers, link, changed=self.sync.reload)
        context.facades.offer_global_endpoints(OfferedEndpoints(self.endpoints, self.store))
        replicator = Replicator(
            platform, self.store, self.peers, link, ReplicationMetrics(registry)
        )
        failover = Failover(
            platform, self.store, self.peers, self.endpoints, link, FailoverMetrics(registry)
        )
        context.changes.listen(CHANGES, failover.heard)
        context.changes.listen(CHANGES, replicator.heard)
        self._duties: dict[Role, list[Duty]] = {
            Role.SCHEDULER: [
                context.singleton("sites-replicator", replicator.run),
                context.singleton("sites-failover", failover.run),
            ],
            Role.GATEWAY: [Duty("sites-sync", self.sync.run, self.sync.stop, ends=True)],
        }
        # Only the active site of an endpoint routes its buses; the other one stands by.
        self.standby: SiteStandby | None = None
        if Role.ROUTER in context.roles:
            self.standby = SiteStandby(platform, self.store, self.site)
            context.changes.listen(CHANGES, self.standby.heard)
            context.site_routing.register(self.standby)
            self._duties[Role.ROUTER] = [
                Duty("sites-standby", self.standby.run, self.standby.stop, ends=True)
            ]
        if Role.GATEWAY in context.roles:
            platform.ingest.beside_append(self.sync.beside_append)

    def duties(self) -> Mapping[Role, Sequence[Duty]]:
        return self._duties

    async def close(self) -> None:
        return None


async def open_sites(context: CapabilityContext) -> SitesOpened:
    await context.database.migrate(MIGRATIONS, version_table=VERSION_TABLE)
    opened = SitesOpened(context)
    await opened.sync.reload()  # before the first request: a sync endpoint holds it at once
    if opened.standby is not None:
        await opened.standby.refresh()  # before the router's first batch
    return opened

"""Synchronous replication: on the active site of an endpoint in `sync` mode, a request's
events are sent to the other site before the request is answered. A peer that does not
acknowledge within the policy's bound (1 s by default) degrades that request to `async`: it is
answered, the replicator ships its events later, a metric counts it and a line says why; for
the next seconds requests do not wait for that peer, then one tries again."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Final

import structlog
from prometheus_client import CollectorRegistry, Counter

from stellwerk.auth import Principal, Scope
from stellwerk.refs import TenantId, TenantRef
from stellwerk.service import Platform
from stellwerk.sites.endpoints import other_site
from stellwerk.sites.link import PeerLink
from stellwerk.sites.store import SitesStore

log = structlog.get_logger("stellwerk.sites")

ACTOR: Final = "sites-sync"
RELOAD_SECONDS: Final = 1.0
# After a peer missed the bound, requests do not wait for it for this long; then one tries
# again. Without it a hung peer would cost every request the whole bound.
DEGRADED_SECONDS: Final = 2.0

# (tenant, bus) -> (the other site, the bound in seconds)
Routes = dict[tuple[TenantId, str], tuple[str, float]]
Group = tuple[TenantId, str, str]  # tenant, peer site, bus


class SyncMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.acknowledged = Counter(
            "stellwerk_site_sync_events",
            "Events the peer site acknowledged before the request was answered",
            ["tenant", "site"],
            registry=registry,
        )
        self.requests = Counter(
            "stellwerk_site_sync_requests",
            "Peer requests that carried synchronously replicated events (several requests' "
            "events go in one when they append while one is in flight)",
            ["tenant", "site"],
            registry=registry,
        )
        self.degraded = Counter(
            "stellwerk_site_sync_degraded",
            "Requests answered without the peer's acknowledgement (left to async replication)",
            ["tenant", "site"],
            registry=registry,
        )


class SyncReplication:
    def __init__(
        self, platform: Platform, store: SitesStore, link: PeerLink, metrics: SyncMetrics
    ) -> None:
        self._platform = platform
        self._store = store
        self._link = link
        self._metrics = metrics
        self._routes: Routes = {}
        self._stopping = asyncio.Event()
        # (tenant, peer) -> until when requests do not wait for the peer; present while degraded.
        self._degraded: dict[tuple[TenantId, str], float] = {}
        # (tenant, peer, bus) -> the requests waiting for the next peer request, and its sender.
        self._waiting: dict[Group, list[tuple[Sequence[int], asyncio.Future[str | None]]]] = {}
        self._senders: dict[Group, asyncio.Task[None]] = {}

    async def reload(self) -> None:
        """Which buses this site must replicate synchronously now: those of `sync` endpoints
        it is the active site of."""
        routes: Routes = {}
        local = self._link.local_site
        for record in await self._store.endpoints():
            spec = record.spec
            if spec.replication != "sync" or record.active != local:
                continue
            target = other_site(record, local)
            for bus in spec.buses:
                routes[(record.tenant_id, bus)] = (target, spec.health.sync_timeout_ms / 1000)
        self._routes = routes

    async def run(self) -> None:
        """Reload every second until `stop` (between reloads, never inside a query)."""
        while not self._stopping.is_set():
            await self.reload()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), RELOAD_SECONDS)

    def stop(self) -> None:
        self._stopping.set()
        for task in self._senders.values():
            task.cancel()

    async def after_append(self, tenant: TenantRef, bus: str, positions: Sequence[int]) -> None:
        route = self._routes.get((tenant.id, bus))
        if route is None or not positions:
            return
        site, bound = route
        key = (tenant.id, site)
        loop = asyncio.get_running_loop()
        if self._degraded.get(key, 0.0) > loop.time():
            self._metrics.degraded.labels(tenant.name, site).inc()
            return
        # Group commit across the link: the requests that append while one peer request of
        # this bus is in flight go together in the next one (one read, one signature, one
        # round trip for all of them).
        group = (tenant.id, site, bus)
        waiting = self._waiting.setdefault(group, [])
        answer: asyncio.Future[str | None] = loop.create_future()
        waiting.append((positions, answer))
        if group not in self._senders:
            self._senders[group] = asyncio.create_task(
                self._send_groups(tenant, site, bus, bound), name=f"sites-sync-{bus}"
            )
        try:
            problem = await asyncio.wait_for(asyncio.shield(answer), bound)
        except TimeoutError:
            problem = f"no acknowledgement within {bound:g} s"
        if problem is None:
            self._metrics.acknowledged.labels(tenant.name, site).inc(len(positions))
            if self._degraded.pop(key, None) is not None:
                log.info("synchronous replication resumed", tenant=tenant.name, site=site)
            return
        self._metrics.degraded.labels(tenant.name, site).inc()
        first = key not in self._degraded
        self._degraded[key] = loop.time() + DEGRADED_SECONDS
        if first:
            log.warning(
                "synchronous replication degraded to async",
                tenant=tenant.name,
                site=site,
                bus=bus,
                reason=problem,
            )

    async def _send_groups(self, tenant: TenantRef, site: str, bus: str, bound: float) -> None:
        """Send what waits for `bus`, a group at a time, until nothing waits."""
        group = (tenant.id, site, bus)
        try:
            while waiting := self._waiting.pop(group, None):
                try:
                    problem = await self._send(tenant, site, bus, bound, waiting)
                except Exception as exc:  # every waiting request must be answered
                    problem = f"{type(exc).__name__}: {exc}"
                for _, answer in waiting:
                    if not answer.done():
                        answer.set_result(problem)
        finally:
            self._senders.pop(group, None)

    async def _send(
        self,
        tenant: TenantRef,
        site: str,
        bus: str,
        bound: float,
        waiting: list[tuple[Sequence[int], asyncio.Future[str | None]]],
    ) -> str | None:
        principal = Principal(tenant, key_id=ACTOR, scope=Scope.ADMIN)
        wanted = {p for positions, _ in waiting for p in positions}
        start = min(wanted) - 1
        span = max(wanted) - start
        events = [
            e
            for e in await self._platform.tail.page(principal, bus, start, limit=span)
            if e.position in wanted
        ]
        body = b'{"bus":"' + bus.encode() + b'","events":[' + b",".join(e.body for e in events)
        body += b"]}"
        path = f"/v1/peers/{self._link.local_site}/events"
        self._metrics.requests.labels(tenant.name, site).inc()
        return await self._link.send(principal, site, "POST", path, body, within=bound)

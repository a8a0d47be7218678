"""Synchronous replication: on the active site of an endpoint in `sync` mode, a request's
events are sent to the other site before the request is answered. A peer that does not
acknowledge within the policy's bound (1 s by default) degrades that request to `async`: it is
answered, the replicator ships its events later, a metric counts it and a line says why; for
the next seconds requests do not wait for that peer, then one tries again.

Each peer request carries the bus from where the peer is known to have it through the newest
event waiting, so that what the peer acknowledged is a prefix of the bus: the sync path moves
the replication cursor, and the replicator, which holds such buses' events back a moment, finds
them sent and does not send them again."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Final

import structlog
from prometheus_client import CollectorRegistry, Counter

from stellwerk.auth import Principal, Scope
from stellwerk.clock import to_us, utc_now
from stellwerk.refs import TenantId, TenantRef
from stellwerk.service import Platform
from stellwerk.sites.endpoints import SyncRoutes, sync_routes
from stellwerk.sites.link import PeerLink
from stellwerk.sites.replication import BATCH, replica_batch, sent_to
from stellwerk.sites.store import Cursor, SitesStore

log = structlog.get_logger("stellwerk.sites")

ACTOR: Final = "sites-sync"
RELOAD_SECONDS: Final = 1.0
# After a peer missed the bound, requests do not wait for it for this long; then one tries
# again. Without it a hung peer would cost every request the whole bound.
DEGRADED_SECONDS: Final = 2.0
# The replication cursor is written at most this often per bus (a control-plane commit each);
# the replicator's hold (`replication.SYNC_HOLD_SECONDS`) outlasts it.
CURSOR_FLUSH_SECONDS: Final = 0.2
# How long a known prefix (`_Prefix`) is trusted before it is read again from the cursor, which
# the replicator moves too (it ships what the sync path left: degraded requests' events).
PREFIX_READ_SECONDS: Final = 1.0

Group = tuple[TenantId, str, str]  # tenant, peer site, bus


class _Prefix:
    """How far the peer has every event of a bus (but its own), as this process knows it."""

    __slots__ = ("flushing", "read_at", "through", "unwritten")

    def __init__(self, through: int, read_at: float) -> None:
        self.through = through
        self.read_at = read_at
        self.unwritten: Cursor | None = None  # acknowledged, not written to the cursor yet
        self.flushing = False


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
        self._routes: SyncRoutes = {}
        self._stopping = asyncio.Event()
        # (tenant, peer) -> until when requests do not wait for the peer; present while degraded.
        self._degraded: dict[tuple[TenantId, str], float] = {}
        # (tenant, peer, bus) -> the requests waiting for the next peer request, and its sender.
        self._waiting: dict[Group, list[tuple[Sequence[int], asyncio.Future[str | None]]]] = {}
        self._senders: dict[Group, asyncio.Task[None]] = {}
        self._prefixes: dict[Group, _Prefix] = {}
        self._flushes: set[asyncio.Task[None]] = set()

    async def reload(self) -> None:
        """Which buses this site must replicate synchronously now: those of `sync` endpoints
        it is the active site of."""
        self._routes = await sync_routes(self._store, self._link.local_site)

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
        for task in self._flushes:
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
        group = (tenant.id, site, bus)
        wanted = {p for positions, _ in waiting for p in positions}
        top = max(wanted)
        prefix = await self._prefix(principal, group)
        if top <= prefix.through:
            return None  # the replicator sent them meanwhile
        # From the known prefix when it is near: the peer then has the bus through `top`, other
        # processes' events and degraded requests' included. Far behind (a peer that was out of
        # reach), only this group's events; the replicator ships the rest.
        whole = top - prefix.through <= BATCH
        start = prefix.through if whole else min(wanted) - 1
        page = await self._platform.tail.page(principal, bus, start, limit=top - start)
        events = sent_to(site, page) if whole else [e for e in page if e.position in wanted]
        if not events:
            return None  # erased meanwhile: nothing left to send
        path = f"/v1/peers/{self._link.local_site}/events"
        self._metrics.requests.labels(tenant.name, site).inc()
        problem = await self._link.send(
            principal, site, "POST", path, replica_batch(bus, events), within=bound
        )
        if problem is None and whole and page and top > prefix.through:
            prefix.through = top
            prefix.unwritten = Cursor(bus, top, to_us(page[-1].recorded_time))
            if not prefix.flushing:
                prefix.flushing = True
                task = asyncio.create_task(self._flush(tenant.id, site, prefix))
                self._flushes.add(task)
                task.add_done_callback(self._flushes.discard)
        return problem

    async def _prefix(self, principal: Principal, group: Group) -> _Prefix:
        """The bus's known prefix, read again from the cursor once it is a while old."""
        now = asyncio.get_running_loop().time()
        prefix = self._prefixes.get(group)
        if prefix is not None and now - prefix.read_at < PREFIX_READ_SECONDS:
            return prefix
        tenant_id, site, bus = group
        cursor = (await self._store.cursors(tenant_id, site)).get(bus)
        stored = cursor.position if cursor is not None else 0
        if prefix is None:
            prefix = self._prefixes[group] = _Prefix(stored, now)
        prefix.through, prefix.read_at = max(prefix.through, stored), now
        return prefix

    async def _flush(self, tenant_id: TenantId, site: str, prefix: _Prefix) -> None:
        """Write the acknowledged prefix to the replication cursor, at most every
        `CURSOR_FLUSH_SECONDS`, until nothing is left to write."""
        try:
            while prefix.unwritten is not None:
                await asyncio.sleep(CURSOR_FLUSH_SECONDS)  # gathers the groups acknowledged
                cursor, prefix.unwritten = prefix.unwritten, None
                try:
                    await self._store.advance(tenant_id, site, cursor, utc_now())
                except Exception as exc:  # the replicator sends again: harmless, only slower
                    log.warning("sync replication cursor not written", site=site, error=repr(exc))
        finally:
            prefix.flushing = False

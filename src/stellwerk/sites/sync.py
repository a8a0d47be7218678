"""Synchronous replication: on the active site of an endpoint in `sync` mode, a request's
events are sent to the other site before the request is answered. A peer that does not
acknowledge within the policy's bound (1 s by default) degrades that request to `async`: it is
answered, the replicator ships its events later, a metric counts it and a line says why; for
the next seconds requests do not wait for that peer, then one tries again.

The peer request goes out as soon as the event log has fixed the events' positions and recorded
time, while the local group is still being written and synced (`EventLog.append`'s
`announce`): the two appends overlap, and the request is answered once both are durable. The
requests of one local group go to the peer in one request; while one of a bus is out, the groups
announced meanwhile wait and go together in the next. What the peer acknowledged is
written to the replication cursor a moment later, with any events between that the peer lacks
(sent then), so that the replicator, which holds such buses' events back a while, finds them
sent and does not send them again."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Final

import msgspec
import structlog
from prometheus_client import CollectorRegistry, Counter

from stellwerk.auth import Principal, Scope
from stellwerk.clock import to_us, utc_now
from stellwerk.refs import TenantId, TenantRef
from stellwerk.service import AppendResult, NewEvent, Platform
from stellwerk.sites.endpoints import SyncRoutes, sync_routes
from stellwerk.sites.link import PeerLink
from stellwerk.sites.replication import BATCH, ORIGIN_SITE, replica_batch
from stellwerk.sites.store import Cursor, SitesStore
from stellwerk.sites.stream import PeerStreams, StreamRefused

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
# Acknowledged positions kept above the prefix at most; beyond, the replicator's cursor is left
# to move it (a peer that takes sync requests but refuses the events between them).
MAX_ACKED: Final = 50 * BATCH

Group = tuple[TenantId, str, str]  # tenant, peer site, bus
_encode: Final = msgspec.json.Encoder().encode


class _Prefix:
    """How far the peer has every event of a bus (but its own), as this process knows it, and
    the positions above that it acknowledged or is being sent."""

    __slots__ = ("acked", "flushing", "in_flight", "read_at", "through")

    def __init__(self) -> None:
        self.through = 0
        self.read_at = float("-inf")  # read from the cursor before it is first used
        self.acked: set[int] = set()
        self.in_flight: set[int] = set()
        self.flushing = False


class _Forming:
    """The peer request of one local group, as its requests are announced."""

    __slots__ = ("bodies", "positions", "requests")

    def __init__(self) -> None:
        self.requests: list[SyncRequest] = []
        self.bodies: list[bytes] = []
        self.positions: list[int] = []


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
            "Peer requests that carried synchronously replicated events (the requests of one "
            "local group commit go in one)",
            ["tenant", "site"],
            registry=registry,
        )
        self.streamed = Counter(
            "stellwerk_site_sync_streamed",
            "Peer requests of synchronous replication that went on the kept peer stream (the "
            "rest went as HTTP requests: a peer without the stream)",
            ["tenant", "site"],
            registry=registry,
        )
        self.degraded = Counter(
            "stellwerk_site_sync_degraded",
            "Requests answered without the peer's acknowledgement (left to async replication)",
            ["tenant", "site"],
            registry=registry,
        )


class SyncRequest:
    """One ingest request's part in synchronous replication (`Ingest.beside_append`)."""

    __slots__ = (
        "_sync",
        "answer",
        "batch",
        "bound",
        "bus",
        "nothing_to_send",
        "positions",
        "site",
        "tenant",
    )

    def __init__(
        self,
        sync: SyncReplication,
        tenant: TenantRef,
        site: str,
        bus: str,
        bound: float,
        batch: Sequence[NewEvent],
    ) -> None:
        self._sync = sync
        self.tenant = tenant
        self.site = site
        self.bus = bus
        self.bound = bound
        self.batch = batch
        self.positions: list[int] = []
        # The peer's answer (None: stored), once the events are on their way.
        self.answer: asyncio.Future[str | None] | None = None
        self.nothing_to_send = False  # announced: duplicates only, or the peer's own events

    def announce(self, results: Sequence[AppendResult], recorded: bytes) -> None:
        self._sync.planned(self, results, recorded)

    async def finish(self) -> None:
        await self._sync.finish(self)


class SyncReplication:
    def __init__(
        self,
        platform: Platform,
        store: SitesStore,
        link: PeerLink,
        metrics: SyncMetrics,
        streams: PeerStreams,
    ) -> None:
        self._platform = platform
        self._store = store
        self._link = link
        self._streams = streams
        self._metrics = metrics
        self._routes: SyncRoutes = {}
        self._stopping = asyncio.Event()
        # (tenant, peer) -> until when requests do not wait for the peer; present while degraded.
        self._degraded: dict[tuple[TenantId, str], float] = {}
        self._forming: dict[Group, _Forming] = {}
        self._sending: set[Group] = set()  # one peer request per bus is out at a time
        self._prefixes: dict[Group, _Prefix] = {}
        self._tasks: set[asyncio.Task[None]] = set()

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
        for task in self._tasks:
            task.cancel()
        self._streams.close()

    def beside_append(
        self, tenant: TenantRef, bus: str, batch: Sequence[NewEvent]
    ) -> SyncRequest | None:
        """The request's part if `bus` is replicated synchronously from here, else None."""
        route = self._routes.get((tenant.id, bus))
        if route is None:
            return None
        site, bound = route
        if self._degraded.get((tenant.id, site), 0.0) > asyncio.get_running_loop().time():
            self._metrics.degraded.labels(tenant.name, site).inc()
            return None
        return SyncRequest(self, tenant, site, bus, bound, batch)

    def planned(
        self, request: SyncRequest, results: Sequence[AppendResult], recorded: bytes
    ) -> None:
        """The log fixed the request's positions and recorded time: its new events join the
        peer request of their local group, sent once every request of it is announced (the
        log announces a group's requests in one callback), or, while one of the bus is out,
        once that one is answered, with the groups announced meanwhile."""
        marker = b'"' + ORIGIN_SITE.encode() + b'":' + _encode(request.site)
        # What the log stores, its own extensions reduced to the one the peer keeps
        # (`originrecordedtime`; it sets `tenant` and `bus` itself).
        suffix = b',"recordedtime":"' + recorded + b'"}'
        bodies: list[bytes] = []
        positions: list[int] = []
        for event, result in zip(request.batch, results, strict=True):
            if not result.duplicate and marker not in event.body:
                bodies.append(event.body[:-1] + suffix)
                positions.append(result.position)
        if not bodies:
            request.nothing_to_send = True
            return
        loop = asyncio.get_running_loop()
        request.positions = positions
        request.answer = loop.create_future()
        group = (request.tenant.id, request.site, request.bus)
        forming = self._forming.get(group)
        if forming is None:
            forming = self._forming[group] = _Forming()
            if group not in self._sending:
                loop.call_soon(self._dispatch, group)
        forming.requests.append(request)
        forming.bodies += bodies
        forming.positions += positions

    def _dispatch(self, group: Group) -> None:
        forming = self._forming.pop(group)
        self._sending.add(group)
        first = forming.requests[0]
        prefix = self._prefix(group)
        prefix.in_flight.update(forming.positions)
        task = asyncio.create_task(
            self._send(first.tenant, first.site, first.bus, first.bound, forming, prefix),
            name=f"sites-sync-{first.bus}",
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(
        self,
        tenant: TenantRef,
        site: str,
        bus: str,
        bound: float,
        forming: _Forming,
        prefix: _Prefix,
    ) -> None:
        principal = Principal(tenant, key_id=ACTOR, scope=Scope.ADMIN)
        body = b'{"bus":' + _encode(bus) + b',"events":[' + b",".join(forming.bodies) + b"]}"
        path = f"/v1/peers/{self._link.local_site}/events"
        self._metrics.requests.labels(tenant.name, site).inc()
        try:
            problem = await self._to_peer(principal, site, path, body, bound)
        except Exception as exc:  # every waiting request must be answered
            problem = f"{type(exc).__name__}: {exc}"
        finally:
            prefix.in_flight.difference_update(forming.positions)
            group = (tenant.id, site, bus)
            self._sending.discard(group)
            if group in self._forming and not self._stopping.is_set():
                self._dispatch(group)
        for request in forming.requests:
            if request.answer is not None and not request.answer.done():
                request.answer.set_result(problem)

    async def _to_peer(
        self, principal: Principal, site: str, path: str, body: bytes, bound: float
    ) -> str | None:
        """One group's events to the peer: on the kept stream, or as an HTTP request to a peer
        that has no stream (an older version)."""
        if self._streams.supported(principal, site):
            with contextlib.suppress(StreamRefused):
                problem = await self._streams.send(principal, site, body, bound)
                self._metrics.streamed.labels(principal.tenant, site).inc()
                return problem
        return await self._link.send(principal, site, "POST", path, body, within=bound)

    async def finish(self, request: SyncRequest) -> None:
        """Wait (up to the bound) for the peer's acknowledgement of the request's events, which
        are durable here now; degrade when it does not come."""
        answer = request.answer
        if request.nothing_to_send:
            return
        tenant, site = request.tenant, request.site
        key = (tenant.id, site)
        if answer is None:  # never announced (a log that did not, a callback that failed)
            problem: str | None = "the events were not announced to the sync path"
        else:
            try:
                problem = await asyncio.wait_for(asyncio.shield(answer), request.bound)
            except TimeoutError:
                problem = f"no acknowledgement within {request.bound:g} s"
        if problem is None:
            self._metrics.acknowledged.labels(tenant.name, site).inc(len(request.positions))
            if self._degraded.pop(key, None) is not None:
                log.info("synchronous replication resumed", tenant=tenant.name, site=site)
            # Only now, durable here too: the positions of an append that failed are given
            # again, to events the peer does not have.
            self._acknowledged(request)
            return
        self._metrics.degraded.labels(tenant.name, site).inc()
        first = key not in self._degraded
        self._degraded[key] = asyncio.get_running_loop().time() + DEGRADED_SECONDS
        if first:
            log.warning(
                "synchronous replication degraded to async",
                tenant=tenant.name,
                site=site,
                bus=request.bus,
                reason=problem,
            )

    def _prefix(self, group: Group) -> _Prefix:
        prefix = self._prefixes.get(group)
        if prefix is None:
            prefix = self._prefixes[group] = _Prefix()
        return prefix

    def _acknowledged(self, request: SyncRequest) -> None:
        group = (request.tenant.id, request.site, request.bus)
        prefix = self._prefix(group)
        if len(prefix.acked) < MAX_ACKED:
            prefix.acked.update(request.positions)
        if not prefix.flushing:
            prefix.flushing = True
            task = asyncio.create_task(self._flush(request.tenant, group, prefix))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _flush(self, tenant: TenantRef, group: Group, prefix: _Prefix) -> None:
        """Move the replication cursor over what the peer acknowledged, at most every
        `CURSOR_FLUSH_SECONDS`, until nothing acknowledged is left above it."""
        try:
            while prefix.acked:
                await asyncio.sleep(CURSOR_FLUSH_SECONDS)  # gathers the groups acknowledged
                try:
                    cursor = await self._close_prefix(tenant, group, prefix)
                    if cursor is not None:
                        await self._store.advance(tenant.id, group[1], cursor, utc_now())
                except Exception as exc:  # the replicator sends again: harmless, only slower
                    log.warning(
                        "sync replication cursor not written", site=group[1], error=repr(exc)
                    )
        finally:
            prefix.flushing = False

    async def _close_prefix(
        self, tenant: TenantRef, group: Group, prefix: _Prefix
    ) -> Cursor | None:
        """Read the bus from the known prefix up to the newest acknowledged event, send the
        peer what it lacks between (other requests' and processes' events, degraded ones), and
        return the cursor past them; None when it cannot move."""
        tenant_id, site, bus = group
        now = asyncio.get_running_loop().time()
        if now - prefix.read_at >= PREFIX_READ_SECONDS:
            cursor = (await self._store.cursors(tenant_id, site)).get(bus)
            prefix.through = max(prefix.through, cursor.position if cursor is not None else 0)
            prefix.read_at = now
        prefix.acked = {p for p in prefix.acked if p > prefix.through}
        if not prefix.acked:
            return None
        top = max(prefix.acked)
        principal = Principal(tenant, key_id=ACTOR, scope=Scope.ADMIN)
        page = await self._platform.tail.page(principal, bus, prefix.through, limit=BATCH)
        marker = b'"' + ORIGIN_SITE.encode() + b'":' + _encode(site)
        lacking = []
        last = None
        for event in page:
            # Stop before an event whose peer request is out: it may be acknowledged yet.
            if event.position > top or event.position in prefix.in_flight:
                break
            if event.position not in prefix.acked and marker not in event.body:
                lacking.append(event)
            last = event
        if last is None:
            return None
        if lacking:
            path = f"/v1/peers/{self._link.local_site}/events"
            self._metrics.requests.labels(tenant.name, site).inc()
            problem = await self._link.send(
                principal, site, "POST", path, replica_batch(bus, lacking)
            )
            if problem is not None:
                return None  # the replicator sends them
        prefix.through = last.position
        prefix.acked = {p for p in prefix.acked if p > last.position}
        return Cursor(bus, last.position, to_us(last.recorded_time))

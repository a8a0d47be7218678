"""Replication of a tenant's events to its peer sites, and their intake from a peer.

Each (tenant, peer, bus) has a shipper that follows the bus from its cursor, sends each page of
events to the peer in one signed request and moves the cursor once the peer has them durably.
A crash between the two sends the page again; the peer's dedup (same id and source) makes that
harmless. Events that came from a peer are not sent back to it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

import msgspec
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from stellwerk.auth import Principal
from stellwerk.clock import to_us, utc_now
from stellwerk.events import CloudEvent, EventError, validate_event
from stellwerk.refs import TenantId
from stellwerk.service import BusInput, Conflict, InvalidRequest, NotFound, Platform, StoredEvent
from stellwerk.sites.endpoints import SyncRoutes, sync_routes
from stellwerk.sites.link import PeerLink
from stellwerk.sites.mirror import sealer, snapshot
from stellwerk.sites.model import ReplicaBatch, Replicated
from stellwerk.sites.peers import Peers
from stellwerk.sites.store import Cursor, PeerRecord, SitesStore

log = structlog.get_logger("stellwerk.sites")

ACTOR: Final = "sites-replicator"
ORIGIN_SITE: Final = "originsite"
ORIGIN_RECORDED: Final = "originrecordedtime"
BATCH: Final = 500
# With no peer there is nothing to replicate until one is added (a signal): this long at most
# between looks, in case a signal was missed or a tool without a server added it.
IDLE_SECONDS: Final = 10.0
MAX_BACKOFF_SECONDS: Final = 5.0
CURSOR_WRITE_SECONDS: Final = 1.0  # at most this often for pages of replicas alone
# On a bus that this site replicates synchronously, the replicator leaves an event this long to
# the sync path before it looks whether the peer has it (the cursor the sync path moves). It
# must outlast a sync round trip and the sync path's cursor write (`sync.CURSOR_FLUSH_SECONDS`),
# or the replicator sends again what the peer has (harmless, but a whole request and append).
SYNC_HOLD_SECONDS: Final = 0.3
# After a short page the shipper lets the bus gather this long before it reads again: without
# it a peer taking sync replicas one by one woke its replicator and read its log once per event
# (to pass each over). Appends meanwhile are not missed: the tail is armed before each read.
GATHER_SECONDS: Final = 0.05

_encode: Final = msgspec.json.Encoder().encode
_decode_batch: Final = msgspec.json.Decoder(ReplicaBatch).decode
_decode_object: Final = msgspec.json.Decoder(dict[str, Any]).decode

Key = tuple[TenantId, str, str]  # tenant, peer site, bus


def sent_to(site: str, page: list[StoredEvent]) -> list[StoredEvent]:
    """The events of `page` that go to the peer `site`: all but those that came from it."""
    marker = b'"' + ORIGIN_SITE.encode() + b'":' + _encode(site)
    return [event for event in page if marker not in event.body]


def replica_batch(bus: str, page: list[StoredEvent]) -> bytes:
    """The body of a peer request that carries `page` (`POST /v1/peers/{site}/events`)."""
    return b'{"bus":' + _encode(bus) + b',"events":[' + b",".join(e.body for e in page) + b"]}"


class ReplicationMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.sent = Counter(
            "stellwerk_site_replicated_events",
            "Events a peer site acknowledged, by tenant and peer",
            ["tenant", "site"],
            registry=registry,
        )
        self.lag = Gauge(
            "stellwerk_site_replication_lag_seconds",
            "Age of the oldest event of a bus that the peer does not have yet (0: none)",
            ["tenant", "site", "bus"],
            registry=registry,
        )
        self.failures = Counter(
            "stellwerk_site_replication_failures",
            "Batches a peer did not acknowledge (sent again), by tenant and peer",
            ["tenant", "site"],
            registry=registry,
        )


class Replicator:
    """Ships every paired tenant's buses to its peers; one process of the deployment runs it."""

    def __init__(
        self,
        platform: Platform,
        store: SitesStore,
        peers: Peers,
        link: PeerLink,
        metrics: ReplicationMetrics,
        *,
        scan_seconds: float = 1.0,
        idle_seconds: float | None = None,
        keepalive_seconds: float = 5.0,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._platform = platform
        self._store = store
        self._peers = peers
        self._link = link
        self._metrics = metrics
        self._scan = scan_seconds
        self._idle = IDLE_SECONDS if idle_seconds is None else idle_seconds
        self._heard = asyncio.Event()
        self._paired = False  # whether the last scan found a peer
        self._keepalive = keepalive_seconds
        self._clock = clock
        self._shippers: dict[Key, asyncio.Task[None]] = {}
        self._synced: SyncRoutes = {}  # the buses the sync path ships, as of the last scan

    def heard(self) -> None:
        """Peers or endpoints changed (in this process or another)."""
        self._heard.set()

    async def run(self) -> None:
        """Start a shipper for each paired bus, and stop those whose pairing or bus went."""
        try:
            while True:
                self._heard.clear()
                wanted = await self._wanted()
                for key, principal in wanted.items():
                    if key not in self._shippers:
                        self._shippers[key] = asyncio.create_task(
                            self._ship(principal, key[1], key[2]), name=f"replicate-{key}"
                        )
                for key in [k for k in self._shippers if k not in wanted]:
                    self._shippers.pop(key).cancel()
                for key, task in list(self._shippers.items()):
                    if task.done():
                        del self._shippers[key]  # started again on the next scan
                        if not task.cancelled() and task.exception() is not None:
                            log.error(
                                "replication stopped",
                                bus=key[2],
                                site=key[1],
                                error=repr(task.exception()),
                            )
                if self._paired or self._shippers:
                    await asyncio.sleep(self._scan)
                    continue
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._idle):
                        await self._heard.wait()  # no peer: until one is added
        finally:
            for task in self._shippers.values():
                task.cancel()
            await asyncio.gather(*self._shippers.values(), return_exceptions=True)
            self._shippers.clear()

    async def _wanted(self) -> dict[Key, Principal]:
        """Every paired bus, once each peer has the tenant's keys and buses as they are now."""
        wanted: dict[Key, Principal] = {}
        tenants = await self._store.paired_tenants()
        self._paired = bool(tenants)
        self._synced = await sync_routes(self._store, self._link.local_site) if tenants else {}
        for tenant_id in tenants:
            try:
                principal = await self._platform.tenants.acting(tenant_id, ACTOR)
            except NotFound:
                continue
            buses = await self._platform.buses.all(principal)
            for peer in await self._store.peers(tenant_id):
                await self._mirror(principal, peer)
                for bus in buses:
                    wanted[(tenant_id, peer.site, bus.name)] = principal
        return wanted

    async def _mirror(self, principal: Principal, peer: PeerRecord) -> None:
        _, digest = await snapshot(self._platform, principal, peer)
        if digest == peer.control_digest:
            return  # checked before any key is opened or sealed: this runs every scan
        seal = sealer(
            self._peers.secret(principal, peer),
            tenant=principal.tenant,
            sender=self._link.local_site,
            receiver=peer.site,
        )
        body, digest = await snapshot(self._platform, principal, peer, seal)
        path = f"/v1/peers/{self._link.local_site}/mirror"
        problem = await self._link.send(principal, peer.site, "PUT", path, body)
        if problem is None:
            await self._store.mirrored(principal.tenant_id, peer.site, digest, self._clock())
        elif problem.startswith("HTTP 409") and peer.tenant_state in ("pending", "conflict"):
            # The peer's tenant of this name holds events of its own, as this one does.
            if peer.tenant_state != "conflict":
                log.warning("pairing refused by the peer: tenant conflict", site=peer.site)
            await self._store.settle(principal.tenant_id, peer.site, "conflict", problem)
        else:
            log.warning("mirroring keys and buses to peer failed", site=peer.site, error=problem)

    async def _ship(self, principal: Principal, site: str, bus: str) -> None:
        cursor = (await self._store.cursors(principal.tenant_id, site)).get(bus)
        after = cursor.position if cursor is not None else 0
        gauge = self._metrics.lag.labels(principal.tenant, site, bus)
        tail = self._platform.tail
        # A page of the peer's own events (replicas) is passed over without a request; its
        # cursor is written at most once a second (and at the next keepalive), not once a
        # page: a site taking a peer's sync replicas one by one wrote the control plane (an
        # fsync) per event for nothing. Restarted from an older cursor, the scan passes them
        # over again, or sends again what the peer's dedup then drops.
        loop = asyncio.get_running_loop()
        unwritten: Cursor | None = None
        written_at = 0.0
        async for page in tail.pages(principal, bus, after, keepalive=self._keepalive, limit=BATCH):
            if not page:
                gauge.set(0)
                if unwritten is not None:
                    await self._store.advance(principal.tenant_id, site, unwritten, self._clock())
                    unwritten, written_at = None, loop.time()
                continue
            gauge.set(max(0.0, (to_us(self._clock()) - to_us(page[0].recorded_time)) / 1e6))
            whole = len(page) == BATCH
            last = page[-1]
            if self._synced.get((principal.tenant_id, bus), ("", 0.0))[0] == site:
                page = await self._left_by_sync(principal, site, bus, page)
                if not page:  # the sync path sent them all and moved the cursor past them
                    unwritten = None
                    if not whole:
                        gauge.set(0)
                    continue
            sent = await self._send(principal, site, bus, page)
            cursor = Cursor(bus, last.position, to_us(last.recorded_time))
            if sent or loop.time() - written_at >= CURSOR_WRITE_SECONDS:
                await self._store.advance(principal.tenant_id, site, cursor, self._clock())
                unwritten, written_at = None, loop.time()
            else:
                unwritten = cursor
            if not whole:
                gauge.set(0)
                await asyncio.sleep(GATHER_SECONDS)

    async def _left_by_sync(
        self, principal: Principal, site: str, bus: str, page: list[StoredEvent]
    ) -> list[StoredEvent]:
        """What the sync path has not sent of `page`: it is given `SYNC_HOLD_SECONDS` from
        the newest event's recording, then the cursor it moves says what the peer has."""
        newest = to_us(page[-1].recorded_time)
        hold = (newest - to_us(self._clock())) / 1e6 + SYNC_HOLD_SECONDS
        if hold > 0:
            await asyncio.sleep(hold)  # the sync path's turn; it tells only through the cursor
        cursor = (await self._store.cursors(principal.tenant_id, site)).get(bus)
        through = cursor.position if cursor is not None else 0
        return [event for event in page if event.position > through]

    async def _send(
        self, principal: Principal, site: str, bus: str, page: list[StoredEvent]
    ) -> bool:
        """Send a page until the peer acknowledges it (backing off while it does not); False
        when it held only the peer's own events, so nothing was sent."""
        outgoing = sent_to(site, page)
        if not outgoing:
            return False
        body = replica_batch(bus, outgoing)
        path = f"/v1/peers/{self._link.local_site}/events"
        backoff = 0.1
        failing = False
        while True:
            if await self._peers.record(principal, site) is None:
                return True  # unpaired meanwhile: the scan stops this shipper
            problem = await self._link.send(principal, site, "POST", path, body)
            if problem is None:
                self._metrics.sent.labels(principal.tenant, site).inc(len(outgoing))
                if failing:
                    log.info("replication to peer resumed", site=site, bus=bus)
                return True
            self._metrics.failures.labels(principal.tenant, site).inc()
            if not failing:
                # Once per spell of failures: a peer that is down fails every try the same way.
                log.warning("replication to peer failing", site=site, bus=bus, error=problem)
                failing = True
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)


async def take_replicas(
    platform: Platform, principal: Principal, origin: str, body: bytes
) -> Replicated:
    """Store a batch of events a peer sent, with their ids and sources: the log's dedup makes a
    batch sent twice harmless. Each keeps the site it was first recorded on and its recorded
    time there (`originsite`, `originrecordedtime`); the bus is created if this site lacks it."""
    try:
        batch = _decode_batch(body)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise InvalidRequest(f"not a batch of replicated events: {exc}") from None
    events = [_replica(raw, origin, index) for index, raw in enumerate(batch.events)]
    try:
        await platform.ingest.publish(principal.ref, batch.bus, events)
    except NotFound:
        with contextlib.suppress(Conflict):  # another batch created it meanwhile
            await platform.buses.put(principal, batch.bus, BusInput())
        await platform.ingest.publish(principal.ref, batch.bus, events)
    return Replicated(stored=len(events))


def _replica(raw: msgspec.Raw, origin: str, index: int) -> CloudEvent:
    try:
        obj = _decode_object(raw)
        recorded = obj.get("recordedtime")
        if ORIGIN_SITE not in obj:
            obj[ORIGIN_SITE] = origin
            if isinstance(recorded, str):
                obj[ORIGIN_RECORDED] = recorded
        return validate_event(obj)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise InvalidRequest(f"events[{index}] is not a JSON object: {exc}") from None
    except EventError as exc:
        raise InvalidRequest(f"events[{index}]: {exc}", field=f"events[{index}]") from None

"""Only the active site routes: a site that is not the active site of an endpoint stands by
for the endpoint's buses (`stellwerk.routing.standby`).

It stores what the active site replicates, but its router does not deliver it: it moves over
the replicas the active site has routed already (their `originrecordedtime` before the routed
position the active site sends, `Failover.share_routed`) and over the events taken here that
the active site has stored (it routes them), and waits at the first event it cannot say that
of. Becoming active, it routes from there. What the router's process knows of the endpoints
and positions it reads from the sites tables every `refresh` seconds while it stands by for a
bus; standing by for none, it reads them when an endpoint changed (`heard`), or after
`IDLE_SECONDS` (a missed signal).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

import msgspec
import structlog

from stellwerk.clock import to_us
from stellwerk.events import parse_rfc3339
from stellwerk.refs import BusRef, TenantId, TenantName
from stellwerk.service import NotFound, Platform, StoredEvent
from stellwerk.sites.store import SitesStore

log = structlog.get_logger("stellwerk.sites")

ACTOR: Final = "sites-standby"
REFRESH_SECONDS: Final = 0.5
# Standing by for no bus: only an endpoint's change (a signal) can make it stand by, so it
# waits for one; this long at most, in case a signal was missed.
IDLE_SECONDS: Final = 10.0


class _Origin(msgspec.Struct):
    originsite: str | None = None
    originrecordedtime: str | None = None


_decode_origin: Final = msgspec.json.Decoder(_Origin).decode


class SiteStandby:
    """The `Standby` the sites capability registers in the router's process."""

    def __init__(
        self,
        platform: Platform,
        store: SitesStore,
        local: str,
        *,
        refresh: float = REFRESH_SECONDS,
        idle: float | None = None,
    ) -> None:
        self._platform = platform
        self._store = store
        self._local = local
        self._refresh = refresh
        self._idle = IDLE_SECONDS if idle is None else idle
        self._names: dict[TenantId, TenantName] = {}
        self._active: dict[BusRef, str] = {}  # the buses this site stands by for: active site
        self._through: dict[tuple[BusRef, str], int] = {}  # how far that site routed them
        self._replicated: dict[tuple[BusRef, str], int] = {}  # what it has of ours
        self._stopping = asyncio.Event()
        self._heard = asyncio.Event()

    def heard(self) -> None:
        """Peers or endpoints changed (in this process or another): read them again now."""
        self._heard.set()

    def standing_by(self, bus: BusRef) -> bool:
        return bus in self._active

    def routed_elsewhere(self, bus: BusRef, event: StoredEvent) -> bool:
        active = self._active.get(bus)
        if active is None:
            return False
        try:
            origin = _decode_origin(event.body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return False
        if origin.originsite is None:
            # Taken here while standing by: the active site routes it once it has it.
            return event.position <= self._replicated.get((bus, active), 0)
        if origin.originsite != active or origin.originrecordedtime is None:
            return False
        through = self._through.get((bus, active))
        if through is None:
            return False
        try:
            recorded = to_us(parse_rfc3339(origin.originrecordedtime))
        except ValueError:
            return False
        # Strictly before: events recorded in the same microsecond as the last one routed may
        # lie after it in that site's log. Such an event is routed here again (at least once).
        return recorded < through

    def knowledge(self, bus: BusRef) -> object:
        active = self._active.get(bus)
        if active is None:
            return None
        return (active, self._through.get((bus, active)), self._replicated.get((bus, active), 0))

    async def refresh(self) -> None:
        active: dict[BusRef, str] = {}
        standing = await self._store.standing()
        for record in standing.endpoints:
            spec = record.spec
            if self._local not in (spec.primary, spec.secondary) or record.active == self._local:
                continue
            tenant = await self._name(record.tenant_id)
            if tenant is not None:
                for bus in spec.buses:
                    active[BusRef(tenant, bus)] = record.active
        self._through = await self._by_bus(standing.routed)
        self._replicated = await self._by_bus(standing.cursors)
        if active.keys() != self._active.keys():
            log.info("standing by", buses=sorted(str(bus) for bus in active))
        self._active = active

    async def run(self) -> None:
        self._stopping.clear()
        while not self._stopping.is_set():
            self._heard.clear()
            try:
                await self.refresh()
            except Exception:
                log.exception("reading the endpoints for standing by failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._refresh if self._active else self._idle):
                    await self._heard.wait()

    def stop(self) -> None:
        self._stopping.set()
        self._heard.set()

    async def _by_bus(
        self, values: dict[tuple[TenantId, str, str], int]
    ) -> dict[tuple[BusRef, str], int]:
        out: dict[tuple[BusRef, str], int] = {}
        for (tenant_id, site, bus), value in values.items():
            tenant = await self._name(tenant_id)
            if tenant is not None:
                out[(BusRef(tenant, bus), site)] = value
        return out

    async def _name(self, tenant_id: TenantId) -> TenantName | None:
        name = self._names.get(tenant_id)
        if name is None:
            try:
                name = (await self._platform.tenants.acting(tenant_id, ACTOR)).tenant
            except NotFound:
                return None
            self._names[tenant_id] = name
        return name

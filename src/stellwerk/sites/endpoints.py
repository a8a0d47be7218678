"""Global endpoints of a tenant: two sites, the buses they carry, how events are replicated
between them and when the secondary takes over. This site's view of each, and what the peer
tells it (the spec when it was PUT there, the state when the secondary changes it, how far the
active site has routed)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Final

import msgspec

from stellwerk.auth import Principal
from stellwerk.capability import GlobalEndpoint, GlobalEndpointSpec
from stellwerk.clock import from_us, utc_now
from stellwerk.refs import TenantId
from stellwerk.service import InvalidRequest, NotFound, Platform, checked_name
from stellwerk.sites.link import PeerLink
from stellwerk.sites.model import (
    Endpoint,
    EndpointInput,
    EndpointLag,
    EndpointState,
    HealthPolicy,
    Routed,
)
from stellwerk.sites.peers import Peers, site_name
from stellwerk.sites.store import EndpointRecord, SitesStore

_encode: Final = msgspec.json.Encoder().encode
_decode_spec: Final = msgspec.json.Decoder(EndpointInput).decode
_decode_state: Final = msgspec.json.Decoder(EndpointState).decode
_decode_routed: Final = msgspec.json.Decoder(Routed).decode


# (tenant, bus) -> (the other site, the sync bound in seconds)
SyncRoutes = dict[tuple[TenantId, str], tuple[str, float]]


def other_site(record: EndpointRecord, local: str) -> str:
    spec = record.spec
    return spec.secondary if local == spec.primary else spec.primary


async def sync_routes(store: SitesStore, local: str) -> SyncRoutes:
    """The buses site `local` replicates synchronously now: those of the `sync` endpoints it
    is the active site of, with the other site and the bound."""
    routes: SyncRoutes = {}
    for record in await store.endpoints():
        spec = record.spec
        if spec.replication != "sync" or record.active != local:
            continue
        target = other_site(record, local)
        for bus in spec.buses:
            routes[(record.tenant_id, bus)] = (target, spec.health.sync_timeout_ms / 1000)
    return routes


class Endpoints:
    def __init__(
        self,
        platform: Platform,
        store: SitesStore,
        peers: Peers,
        link: PeerLink,
        *,
        changed: Callable[[], Awaitable[None]] | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._platform = platform
        self._store = store
        self._peers = peers
        self._link = link
        # Told of every change made here, so that this process's synchronous replication takes
        # it in before the answer (other gateways take it in within a second).
        self._changed = changed
        self._clock = clock

    async def _announce(self) -> None:
        if self._changed is not None:
            await self._changed()

    @property
    def local_site(self) -> str:
        return self._link.local_site

    async def put(
        self, principal: Principal, name: str, body: EndpointInput
    ) -> tuple[Endpoint, bool]:
        """Create or change an endpoint here and hand its spec to the peer (sent again by the
        failover loop while the peer is out of reach: `mirrored` says whether it has it)."""
        spec = await self._checked(principal, body)
        record, created = await self._store.put_endpoint(
            principal.tenant_id, name, spec, self._clock()
        )
        await self._announce()
        await self.mirror(principal, record)
        return await self.get(principal, name), created

    async def mirror(self, principal: Principal, record: EndpointRecord) -> bool:
        """Send the endpoint's spec to the other site; whether it took it."""
        other = other_site(record, self.local_site)
        path = f"/v1/peers/{self.local_site}/endpoints/{record.name}"
        if await self._link.send(principal, other, "PUT", path, _encode(record.spec)) is None:
            await self._store.set_mirrored(principal.tenant_id, record.name, record.spec)
            return True
        return False

    async def get(self, principal: Principal, name: str) -> Endpoint:
        record = await self._store.endpoint(principal.tenant_id, name)
        if record is None:
            raise NotFound.of(f"endpoint {name!r}")
        return await self._view(principal, record)

    async def all(self, principal: Principal) -> list[Endpoint]:
        records = await self._store.endpoints(principal.tenant_id)
        return [await self._view(principal, record) for record in records]

    async def delete(self, principal: Principal, name: str) -> None:
        if not await self._store.delete_endpoint(principal.tenant_id, name):
            raise NotFound.of(f"endpoint {name!r}")
        await self._announce()

    async def take_spec(self, principal: Principal, origin: str, name: str, body: bytes) -> None:
        """The spec of an endpoint PUT on the peer site `origin`."""
        try:
            spec = _decode_spec(body)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise InvalidRequest(f"not an endpoint: {exc}") from None
        if origin not in (spec.primary, spec.secondary):
            raise InvalidRequest(f"site {origin!r} is not one of the endpoint's two sites")
        spec = await self._checked(principal, spec)
        await self._store.put_endpoint(principal.tenant_id, name, spec, self._clock())
        await self._store.set_mirrored(principal.tenant_id, name, spec)
        await self._announce()

    async def take_state(self, principal: Principal, origin: str, name: str, body: bytes) -> None:
        """The state the peer site `origin` (the endpoint's secondary) moved the endpoint to."""
        try:
            state = _decode_state(body)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise InvalidRequest(f"not an endpoint state: {exc}") from None
        record = await self._store.endpoint(principal.tenant_id, name)
        if record is None:
            raise NotFound.of(f"endpoint {name!r}")
        if origin != record.spec.secondary:
            raise InvalidRequest(f"only the secondary site changes endpoint {name!r}'s state")
        await self._store.set_state(
            principal.tenant_id,
            name,
            state=state.state,
            active=state.active,
            history=state.history,
            now=self._clock(),
        )
        await self._announce()

    async def take_routed(self, principal: Principal, origin: str, body: bytes) -> None:
        """How far the peer site `origin` has routed the tenant's buses (`Routed`): what this
        site, standing by, moves its router past (`stellwerk.sites.standby`)."""
        try:
            routed = _decode_routed(body)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise InvalidRequest(f"not routed positions: {exc}") from None
        for bus, us in routed.buses.items():
            checked_name("bus", bus, f"buses.{bus}")
            if us < 0:
                raise InvalidRequest(f"buses.{bus}: a negative time", field=f"buses.{bus}")
        await self._store.put_routed(principal.tenant_id, origin, routed.buses, self._clock())

    async def _checked(self, principal: Principal, spec: EndpointInput) -> EndpointInput:
        primary = site_name(spec.primary, "primary")
        secondary = site_name(spec.secondary, "secondary")
        if primary == secondary:
            raise InvalidRequest("primary and secondary must be two sites", field="secondary")
        if self.local_site not in (primary, secondary):
            raise InvalidRequest(
                f"this site is {self.local_site!r}, neither the primary nor the secondary",
                field="primary",
            )
        other = secondary if self.local_site == primary else primary
        if await self._peers.record(principal, other) is None:
            raise InvalidRequest(
                f"site {other!r} is not a peer of this tenant here (PUT /v1/peers/{other} first)",
                field="secondary" if other == secondary else "primary",
            )
        buses = list(dict.fromkeys(spec.buses))
        for index, bus in enumerate(buses):
            try:
                await self._platform.buses.get(principal, bus)
            except (NotFound, InvalidRequest):
                raise InvalidRequest(
                    f"bus {bus!r} does not exist", field=f"buses[{index}]"
                ) from None
        return msgspec.structs.replace(spec, primary=primary, secondary=secondary, buses=buses)

    async def _view(self, principal: Principal, record: EndpointRecord) -> Endpoint:
        spec = record.spec
        other = other_site(record, self.local_site)
        events, seconds = 0, 0.0
        if await self._peers.record(principal, other) is not None:
            for bus in spec.buses:
                lag = await self._peers.lag(principal, other, bus)
                events += lag.lag_events
                seconds = max(seconds, lag.lag_seconds)
        delivered: dict[str, datetime] = {}
        if record.active != self.local_site:
            told = await self._store.routed_by(principal.tenant_id, record.active)
            delivered = {bus: from_us(told[bus]) for bus in spec.buses if bus in told}
        return Endpoint(
            name=record.name,
            primary=spec.primary,
            secondary=spec.secondary,
            buses=spec.buses,
            replication=spec.replication,
            health=spec.health,
            state=record.state,
            active=record.active,
            site=self.local_site,
            lag=EndpointLag(events=events, seconds=seconds),
            mirrored=record.mirrored,
            history=record.history,
            created_at=record.created_at,
            updated_at=record.updated_at,
            delivered_through=delivered,
        )


class OfferedEndpoints:
    """The endpoints as `stellwerk.capability.GlobalEndpoints` offers them to the other
    capabilities: the spec without the health policy (kept as it is, or the default), and no
    lag, so a look-up (PutEvents' `EndpointId`) reads the records and not the log."""

    def __init__(self, endpoints: Endpoints, store: SitesStore) -> None:
        self._endpoints = endpoints
        self._store = store

    async def put(
        self, principal: Principal, name: str, spec: GlobalEndpointSpec
    ) -> tuple[GlobalEndpoint, bool]:
        record = await self._store.endpoint(principal.tenant_id, name)
        body = EndpointInput(
            primary=spec.primary,
            secondary=spec.secondary,
            buses=list(spec.buses),
            replication=spec.replication,
            health=record.spec.health if record is not None else HealthPolicy(),
        )
        _, created = await self._endpoints.put(principal, name, body)
        return await self.get(principal, name), created

    async def get(self, principal: Principal, name: str) -> GlobalEndpoint:
        record = await self._store.endpoint(principal.tenant_id, name)
        if record is None:
            raise NotFound.of(f"endpoint {name!r}")
        return self._offered(record)

    async def all(self, principal: Principal) -> list[GlobalEndpoint]:
        return [self._offered(r) for r in await self._store.endpoints(principal.tenant_id)]

    async def delete(self, principal: Principal, name: str) -> None:
        await self._endpoints.delete(principal, name)

    def _offered(self, record: EndpointRecord) -> GlobalEndpoint:
        spec = record.spec
        return GlobalEndpoint(
            name=record.name,
            spec=GlobalEndpointSpec(
                primary=spec.primary,
                secondary=spec.secondary,
                buses=tuple(spec.buses),
                replication=spec.replication,
            ),
            state=record.state,
            active=record.active,
            site=self._endpoints.local_site,
            mirrored=record.mirrored,
            reason=record.history[-1].reason if record.history else "",
            created_at=record.created_at,
            updated_at=record.updated_at,
        )

"""Grants of a bus: the owner lets another tenant's rules put events on it (a `bus` target with
`tenant`). Revoking stops those deliveries within seconds; they end in the sender's dead-letter
queue."""

from __future__ import annotations

from stellwerk.auth import Principal
from stellwerk.service.buses import Buses
from stellwerk.service.errors import InvalidRequest, NotFound
from stellwerk.storage.control import ControlPlane


class Grants:
    def __init__(self, control: ControlPlane, buses: Buses) -> None:
        self._control = control
        self._buses = buses

    async def grant(self, principal: Principal, bus: str, grantee: str) -> bool:
        """Let tenant `grantee` put events on the bus; whether the grant is new."""
        await self._buses.record(principal.tenant_id, bus)
        target = await self._control.get_tenant(grantee)
        if target is None:
            raise NotFound.of(f"tenant {grantee!r}")
        if target.id == principal.tenant_id:
            raise InvalidRequest("a tenant needs no grant for its own buses")
        return await self._control.grants.grant(principal.tenant_id, bus, target.id)

    async def revoke(self, principal: Principal, bus: str, grantee: str) -> None:
        target = await self._control.get_tenant(grantee)
        if target is None or not await self._control.grants.revoke(
            principal.tenant_id, bus, target.id
        ):
            raise NotFound.of(f"grant of bus {bus!r} to {grantee!r}")

    async def grantees(self, principal: Principal, bus: str) -> list[str]:
        await self._buses.record(principal.tenant_id, bus)
        return await self._control.grants.grantees(principal.tenant_id, bus)

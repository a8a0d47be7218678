"""May a rule of one tenant put events on a bus? Asked before every bus-target delivery."""

from __future__ import annotations

from stellwerk.refs import TenantName
from stellwerk.storage import TtlCache
from stellwerk.storage.control import ControlPlane

CACHE_SECONDS = 5.0


class BusAccess:
    """Refusal reasons for bus targets, cached for a few seconds per (owner, bus, sender)."""

    def __init__(self, control: ControlPlane, ttl: float = CACHE_SECONDS) -> None:
        self._control = control
        self._answers: TtlCache[tuple[str, str, str], str | None] = TtlCache(self._ask, ttl)

    async def refusal(self, owner: str, bus: str, sender: str) -> str | None:
        return await self._answers.get((owner, bus, sender))

    def forget(self, owner: TenantName, bus: str, sender: TenantName) -> None:
        """A grant changed in this process: ask again at the next delivery."""
        self._answers.forget((owner, bus, sender))

    async def _ask(self, key: tuple[str, str, str]) -> str | None:
        owner, bus, sender = key
        if owner != sender:
            if await self._control.grants.allowed(owner, bus, sender):
                return None
            return f"tenant {owner!r} no longer grants bus {bus!r} to tenant {sender!r}"
        tenant = await self._control.get_tenant(owner)
        if tenant is None or await self._control.get_bus(tenant.id, bus) is None:
            return f"bus {bus!r} does not exist any more"
        return None

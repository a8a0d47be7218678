"""A short-lived cache of which buses exist, so ingest does not ask the control plane per request.

Changes made through this process take effect at once (`forget`); a bus deleted by another
process is still accepted for at most `ttl` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from stellwerk.storage.control.store import ControlPlane

_MAX_ENTRIES = 100_000


class BusDirectory:
    def __init__(
        self, control: ControlPlane, ttl: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._control = control
        self._ttl = ttl
        self._clock = clock
        self._known: dict[tuple[str, str], tuple[float, bool]] = {}

    async def exists(self, tenant_id: str, bus: str) -> bool:
        now = self._clock()
        cached = self._known.get((tenant_id, bus))
        if cached is not None and cached[0] > now:
            return cached[1]
        found = await self._control.get_bus(tenant_id, bus) is not None
        if len(self._known) >= _MAX_ENTRIES:
            self._known.clear()
        self._known[(tenant_id, bus)] = (now + self._ttl, found)
        return found

    def forget(self, tenant_id: str, bus: str) -> None:
        self._known.pop((tenant_id, bus), None)

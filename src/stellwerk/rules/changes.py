"""Rule changes as a signal: a version per bus that routers compare, and a wake-up for waiters.

In one process the API calls `notify` after it saved a change; scale-out mode will feed the same
object from change events on the message bus.
"""

from __future__ import annotations

import asyncio


class RuleChanges:
    def __init__(self) -> None:
        self._versions: dict[tuple[str, str], int] = {}
        self._changed = asyncio.Event()

    def notify(self, tenant_id: str, bus: str) -> None:
        key = (tenant_id, bus)
        self._versions[key] = self._versions.get(key, 0) + 1
        self._changed.set()

    def version(self, tenant_id: str, bus: str) -> int:
        return self._versions.get((tenant_id, bus), 0)

    async def wait(self) -> None:
        """Return at the next change (for routers idling on a quiet bus)."""
        self._changed.clear()
        await self._changed.wait()

"""Who is waiting for new events on a bus: routers and live tails wake when ingest appends.

In one process the ingest path calls `appended` after each durable append; scale-out mode will
feed it from the message bus. Waiters re-read the log after waking, so a missed or merged wake-up
costs nothing but latency, and every waiter also has a timeout as a fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable


class LogWatch:
    def __init__(self) -> None:
        self._events: dict[tuple[str, str], asyncio.Event] = {}
        self._listeners: list[Callable[[str, str], None]] = []

    def subscribe(self, listener: Callable[[str, str], None]) -> None:
        """Call `listener(tenant, bus)` after every append (the router's `notify`)."""
        self._listeners.append(listener)

    def appended(self, tenant: str, bus: str) -> None:
        event = self._events.pop((tenant, bus), None)
        if event is not None:
            event.set()
        for listener in self._listeners:
            listener(tenant, bus)

    async def wait(self, tenant: str, bus: str, within: float) -> bool:
        """Wait until the next append to the bus; False when `within` seconds passed first."""
        event = self._events.get((tenant, bus))
        if event is None:
            event = self._events[(tenant, bus)] = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await event.wait()
                return True
        return False

"""Who is waiting for new events on a bus: routers and live tails wake when ingest appends.

In one process the ingest path calls `appended` after each durable append. In scale-out mode
each append is also forwarded to the other processes (`forward`, the signals' `appended`), and
what they forward arrives through `heard`. Waiters re-read the log after waking, so a missed or
merged wake-up costs nothing but latency, and every waiter also has a timeout as a fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from stellwerk.refs import TenantName


class LogWatch:
    def __init__(self, forward: Callable[[TenantName, str], None] | None = None) -> None:
        self._events: dict[tuple[TenantName, str], asyncio.Event] = {}
        self._listeners: list[Callable[[TenantName, str], None]] = []
        self._forward = forward

    def subscribe(self, listener: Callable[[TenantName, str], None]) -> None:
        """Call `listener(tenant, bus)` after every append (the router's `notify`)."""
        self._listeners.append(listener)

    def appended(self, tenant: TenantName, bus: str) -> None:
        """This process appended to the bus."""
        self.heard(tenant, bus)
        if self._forward is not None:
            self._forward(tenant, bus)

    def heard(self, tenant: TenantName, bus: str) -> None:
        """Events were appended to the bus (here, or in another process)."""
        event = self._events.pop((tenant, bus), None)
        if event is not None:
            event.set()
        for listener in self._listeners:
            listener(tenant, bus)

    async def wait(self, tenant: TenantName, bus: str, within: float) -> bool:
        """Wait until the next append to the bus; False when `within` seconds passed first."""
        event = self._events.get((tenant, bus))
        if event is None:
            event = self._events[(tenant, bus)] = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await event.wait()
                return True
        return False

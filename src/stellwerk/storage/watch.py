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

from stellwerk.refs import BusRef


class LogWatch:
    def __init__(self, forward: Callable[[BusRef], None] | None = None) -> None:
        self._events: dict[BusRef, asyncio.Event] = {}
        self._listeners: list[Callable[[BusRef], None]] = []
        self._forward = forward

    def subscribe(self, listener: Callable[[BusRef], None]) -> None:
        """Call `listener(bus)` after every append (the router's `notify`)."""
        self._listeners.append(listener)

    def appended(self, bus: BusRef) -> None:
        """This process appended to the bus (once per batch)."""
        self.heard(bus)
        if self._forward is not None:
            self._forward(bus)

    def heard(self, bus: BusRef) -> None:
        """Events were appended to the bus (here, or in another process)."""
        event = self._events.pop(bus, None)
        if event is not None:
            event.set()
        for listener in self._listeners:
            listener(bus)

    def armed(self, bus: BusRef) -> asyncio.Event:
        """The flag that the next append to the bus raises. A waiter that takes it before it
        reads the bus and waits on it after (`wait(..., armed=)`) wakes for an append that
        lands during the read too; one that looked only after the read would sleep through
        that append until its timeout."""
        event = self._events.get(bus)
        if event is None:
            event = self._events[bus] = asyncio.Event()
        return event

    async def wait(self, bus: BusRef, within: float, *, armed: asyncio.Event | None = None) -> bool:
        """Wait until the next append to the bus (since `armed` was taken, when given); False
        when `within` seconds passed first."""
        event = armed if armed is not None else self.armed(bus)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await event.wait()
                return True
        return False

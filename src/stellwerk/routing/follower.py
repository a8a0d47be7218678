"""The loop that the router and the archiver share: follow every bus's log with a cursor.

Both keep one cursor per bus and move it batch by batch (`step`), each batch's writes and the
new cursor stored together by compare-and-set. Both sleep until told that a bus grew
(`notify(bus)`, or the `appended` event for "some bus") and look at every bus at least
every `poll_seconds` anyway. Woken, they wait `gather_seconds` more before reading, so that
appends arriving one request at a time are read and stored as one batch, not one by one (a
sweep that comes by time reads at once). With
several processes (scale-out) `owns(bus)` says whether this one holds the bus's lease; a
bus it does not own is skipped and its cached cursor forgotten, so that it is read afresh if the
bus comes back. A `conflict` from the store (another process moved the cursor) makes it read the
cursor again and go on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import ClassVar, Final

import structlog

from stellwerk.refs import BusRef

# Each round costs a read of the log (a hop to a reader thread and back) and a cursor move
# however few events it takes, and every single-event request notifies. A millisecond gathers
# what arrives meanwhile into one round, and adds at most that to an event's way to delivery.
GATHER_SECONDS: Final = 0.001

log = structlog.get_logger("stellwerk.routing")


def every_bus(bus: BusRef) -> bool:
    return True


class BusFollower:
    """Subclasses say which buses to follow (`buses`), how to take one batch (`step`), which
    error means "the cursor moved elsewhere" (`conflict`), and what to call their failures in
    the log (`activity`)."""

    conflict: ClassVar[type[Exception]]
    activity: ClassVar[str]  # "routing", "archiving": log events are <activity>_failed
    batch: int  # the most events a `step` takes; fewer means it reached the end of the log

    def __init__(
        self,
        *,
        poll_seconds: float,
        owns: Callable[[BusRef], bool] | None = None,
        appended: asyncio.Event | None = None,
        gather_seconds: float = GATHER_SECONDS,
    ) -> None:
        self.poll_seconds = poll_seconds
        self.gather_seconds = gather_seconds
        self.owns = owns or every_bus
        self.appended = appended or asyncio.Event()
        self._cursors: dict[BusRef, int] = {}
        self._dirty: set[BusRef] = set()
        self._stopping = False

    def buses(self) -> Iterable[BusRef]:
        raise NotImplementedError

    async def step(self, bus: BusRef) -> int:
        """Take the bus's next batch; return how many events (0 at the end of its log)."""
        raise NotImplementedError

    async def gather(self) -> None:
        """Woken for a round: let more appends arrive before it reads (`GATHER_SECONDS`)."""
        if self.gather_seconds > 0:
            await asyncio.sleep(self.gather_seconds)

    async def before_round(self) -> None:
        """Called at the start of every round (the archiver reloads its definitions here)."""

    def notify(self, bus: BusRef) -> None:
        """Events were appended to this bus (a `LogWatch` listener)."""
        self._dirty.add(bus)
        self.appended.set()

    def stop(self) -> None:
        self._stopping = True
        self.appended.set()

    async def run(self, *, burst: bool = False) -> None:
        """Follow until `stop()`; with `burst`, until every bus is followed to its end."""
        self._stopping = False
        loop = asyncio.get_running_loop()
        next_sweep = 0.0
        while not self._stopping:
            self.appended.clear()
            await self.before_round()
            dirty, self._dirty = self._dirty, set()
            # Every bus now and then (a missed notification), and when `appended` was set
            # without a bus ("some bus").
            if loop.time() >= next_sweep or burst or not dirty:
                dirty.update(self.buses())
                next_sweep = loop.time() + self.poll_seconds
            done = 0
            for bus in sorted(dirty):
                try:
                    done += await self.follow(bus)
                except Exception:
                    log.exception(f"{self.activity}_failed", tenant=bus.tenant, bus=bus.bus)
            if burst:
                if done == 0:
                    return
                continue
            # A notification during the round has set `appended` again: no wait then. Only a
            # wake-up gathers: a sweep that came by time has nothing arriving to wait for.
            woken = True
            try:
                async with asyncio.timeout(self.poll_seconds):
                    await self.appended.wait()
            except TimeoutError:
                woken = False
            if woken and not self._stopping:
                await self.gather()

    async def follow(self, bus: BusRef) -> int:
        """Follow the bus up to the end of its log; return how many events were taken."""
        total = 0
        while not self._stopping:
            if not self.owns(bus):
                # Another process moves the cursor now: read it afresh if the bus comes back.
                self._cursors.pop(bus, None)
                break
            try:
                done = await self.step(bus)
            except self.conflict:
                log.info(f"{self.activity}_cursor_moved_elsewhere", tenant=bus.tenant, bus=bus.bus)
                continue
            total += done
            if done < self.batch:
                break  # the end of the log when read; a later append notifies again
        return total

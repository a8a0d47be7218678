"""A live view of a bus: its events as they are recorded, for people debugging rules.

Each event recorded after `after` that matches the optional pattern is yielded with its
position; `None` in between says nothing came for `keepalive` seconds (the HTTP stream sends a
comment then, so that proxies keep it open).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from datetime import datetime
from typing import Protocol

from stellwerk.auth import Principal
from stellwerk.patterns import CompiledPattern, InvalidPatternError, compile_pattern
from stellwerk.seams import EventLog, PendingDeliveries, RouteCursors, StoredEvent
from stellwerk.service.errors import InvalidRequest, NotFound
from stellwerk.storage import LogWatch
from stellwerk.storage.control import BusDirectory

PAGE = 200


class RoutesAndDeliveries(RouteCursors, PendingDeliveries, Protocol):
    """The delivery queue as far as a standby peer site follows it."""


class Tail:
    def __init__(
        self,
        buses: BusDirectory,
        event_log: EventLog,
        log_watch: LogWatch,
        *,
        routes: RoutesAndDeliveries | None = None,
    ) -> None:
        self._buses = buses
        self._log = event_log
        self._watch = log_watch
        self._routes = routes

    async def open(
        self, principal: Principal, bus: str, pattern: str | None, after: int | None
    ) -> tuple[int, CompiledPattern | None]:
        """Check a tail request: where it starts (the bus's end without `after`), and its
        compiled pattern."""
        if await self._buses.bus(principal.tenant_id, bus) is None:
            raise NotFound.of(f"bus {bus!r}")
        compiled: CompiledPattern | None = None
        if pattern is not None:
            try:
                compiled = compile_pattern(pattern)
            except InvalidPatternError as exc:
                raise InvalidRequest(
                    str(exc), code="InvalidEventPatternException", field="pattern"
                ) from None
        if after is None:
            after = await self._log.last_position(principal.bus(bus))
        return after, compiled

    async def follow(
        self,
        principal: Principal,
        bus: str,
        after: int,
        pattern: CompiledPattern | None,
        *,
        keepalive: float,
    ) -> AsyncIterator[StoredEvent | None]:
        async for events in self.pages(principal, bus, after, keepalive=keepalive):
            if not events:
                yield None
            for event in events:
                if pattern is None or pattern.matches(event.body):
                    yield event

    async def pages(
        self, principal: Principal, bus: str, after: int, *, keepalive: float, limit: int = PAGE
    ) -> AsyncGenerator[list[StoredEvent], None]:
        """The bus's events after `after` as the log gives them, a page (up to `limit`) at a
        time, as soon as they are recorded; an empty page when nothing came for `keepalive`
        seconds. For a follower that ships events on in batches (a peer site's replication)."""
        ref = principal.bus(bus)
        while True:
            appended = self._watch.armed(ref)  # before the read: an append during it counts
            events = await self._log.read(ref, after=after, limit=limit)
            if events:
                after = events[-1].position
                yield events
            if len(events) == limit:
                continue
            if not await self._watch.wait(ref, keepalive, armed=appended):
                yield []

    async def page(
        self, principal: Principal, bus: str, after: int, limit: int = PAGE
    ) -> list[StoredEvent]:
        """Up to `limit` of the bus's events after `after`, at once (empty when there are none)."""
        return await self._log.read(principal.bus(bus), after=after, limit=limit)

    async def end(self, principal: Principal, bus: str) -> int:
        """The position of the bus's newest event (0 if none)."""
        return await self._log.last_position(principal.bus(bus))

    async def routed(self, principal: Principal, bus: str) -> StoredEvent | None:
        """The last event of the bus that the router has routed (None before the first, or
        when it is gone from the log): how far this site's deliveries got, for a peer site that
        stands by."""
        if self._routes is None:
            return None
        ref = principal.bus(bus)
        cursor = await self._routes.cursor(ref)
        if cursor <= 0:
            return None
        events = await self._log.read(ref, after=cursor - 1, limit=1)
        return events[0] if events and events[0].position == cursor else None

    async def delivered(self, principal: Principal, bus: str) -> datetime | None:
        """A recorded time before which every event of the bus is routed and every delivery of
        it made (or given up): the earlier of the last routed event's and the oldest unfinished
        delivery's. None before the first routed event. What a peer site standing by follows:
        taking over, it routes from there, so a delivery queued here is not lost with this
        site."""
        routed = await self.routed(principal, bus)  # first: what it routed has been enqueued
        if routed is None or self._routes is None:
            return None
        oldest = await self._routes.oldest_pending(principal.bus(bus))
        return routed.recorded_time if oldest is None else min(oldest, routed.recorded_time)

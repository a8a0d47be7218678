"""A live view of a bus: its events as they are recorded, for people debugging rules.

Each event recorded after `after` that matches the optional pattern is yielded with its
position; `None` in between says nothing came for `keepalive` seconds (the HTTP stream sends a
comment then, so that proxies keep it open).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from stellwerk.auth import Principal
from stellwerk.patterns import CompiledPattern, InvalidPatternError, compile_pattern
from stellwerk.seams import EventLog, StoredEvent
from stellwerk.service.errors import InvalidRequest, NotFound
from stellwerk.storage import LogWatch
from stellwerk.storage.control import BusDirectory

PAGE = 200


class Tail:
    def __init__(self, buses: BusDirectory, event_log: EventLog, log_watch: LogWatch) -> None:
        self._buses = buses
        self._log = event_log
        self._watch = log_watch

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
            after = await self._log.last_position(principal.tenant, bus)
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
        tenant = principal.tenant
        while True:
            events = await self._log.read(tenant, bus, after=after, limit=PAGE)
            for event in events:
                after = event.position
                if pattern is None or pattern.matches(event.body):
                    yield event
            if len(events) == PAGE:
                continue
            if not await self._watch.wait(tenant, bus, keepalive):
                yield None

"""The dead-letter queue of a bus: deliveries that failed for good, and sending them again.

Dead letters are deliveries that failed for good: a 4xx other than 429, retries used up, the
event too old. Redriving moves them back to the queue with their attempts reset; their maximum
event age then counts from the redrive.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec

from stellwerk.auth import Principal
from stellwerk.seams import DeadLetter, DeadLetterQueue
from stellwerk.service.buses import Buses


class DeadLetterView(msgspec.Struct):
    id: int
    rule: str
    target: str
    event_id: str
    event_source: str
    recorded_time: datetime
    dead_time: datetime
    attempts: int
    last_error: str | None
    content_type: str
    payload: Any


def _payload(letter: DeadLetter) -> Any:
    if letter.content_type == "text/plain":
        return letter.payload.decode(errors="replace")
    try:
        return msgspec.json.decode(letter.payload)
    except msgspec.DecodeError:
        return letter.payload.decode(errors="replace")


def _view(letter: DeadLetter) -> DeadLetterView:
    return DeadLetterView(
        id=letter.id,
        rule=letter.rule,
        target=letter.target_id,
        event_id=letter.event_id,
        event_source=letter.event_source,
        recorded_time=letter.recorded_time,
        dead_time=letter.dead_time,
        attempts=letter.attempts,
        last_error=letter.last_error,
        content_type=letter.content_type,
        payload=_payload(letter),
    )


class DeadLetters:
    def __init__(
        self, buses: Buses, queue: DeadLetterQueue, *, redriven: Callable[[], None]
    ) -> None:
        self._buses = buses
        self._queue = queue
        self._redriven = redriven  # wakes this process's delivery worker

    async def all(
        self,
        principal: Principal,
        bus: str,
        *,
        rule: str | None,
        target: str | None,
        after: int,
        limit: int,
    ) -> list[DeadLetterView]:
        await self._buses.record(principal.tenant_id, bus)
        letters = await self._queue.dead_letters(
            principal.bus(bus), rule=rule, target_id=target, after=after, limit=limit
        )
        return [_view(d) for d in letters]

    async def redrive(self, principal: Principal, bus: str, ids: list[int] | None) -> int:
        """Send the dead letters `ids` (None: all of the bus) again; how many went."""
        await self._buses.record(principal.tenant_id, bus)
        moved = await self._queue.redrive(principal.bus(bus), ids)
        self._redriven()
        return moved

"""Delivery history: what happened to an event, and what a target was sent.

Reads the attempts the delivery workers recorded (`stellwerk.seams.DeliveryHistory`); each
read is scoped to the principal's tenant, so another tenant's event id is simply not found.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

from stellwerk.auth import Principal
from stellwerk.seams import (
    ATTEMPT_OUTCOMES,
    DEFAULT_ATTEMPT_PAGE,
    MAX_ATTEMPT_PAGE,
    AttemptOutcome,
    DeliveryHistory,
    EventLog,
    RecordedAttempt,
)
from stellwerk.service.buses import Buses
from stellwerk.service.errors import NotFound, NotSupported

__all__ = [
    "ATTEMPT_OUTCOMES",
    "DEFAULT_ATTEMPT_PAGE",
    "MAX_ATTEMPT_PAGE",
    "AttemptOutcome",
    "AttemptView",
    "EventHistory",
    "History",
    "TargetHistory",
    "TargetState",
]

TargetState = Literal["delivered", "retrying", "dead_lettered", "dropped"]


class AttemptView(msgspec.Struct):
    id: int
    rule: str
    target: str
    event_id: str
    attempt: int
    started: datetime
    duration_ms: float
    outcome: AttemptOutcome
    status: int | None
    error: str | None
    excerpt: str


class TargetHistory(msgspec.Struct):
    """One target's attempts at the event; `state` is where the last one left it."""

    rule: str
    target: str
    state: TargetState
    attempts: list[AttemptView]


class EventHistory(msgspec.Struct):
    """An event, the rules it matched and each target's attempts. `event` is None once the
    log no longer holds the event (retention, erasure); the history may outlive it."""

    id: str
    position: int
    event: Any
    rules: list[str]
    targets: list[TargetHistory]


def _view(recorded: RecordedAttempt) -> AttemptView:
    a = recorded.attempt
    return AttemptView(
        id=recorded.id,
        rule=a.rule,
        target=a.target_id,
        event_id=a.event_id,
        attempt=a.attempt,
        started=a.started,
        duration_ms=a.duration_us / 1000,
        outcome=a.outcome,
        status=a.status,
        error=a.error,
        excerpt=a.excerpt,
    )


class History:
    """`history` is None where the queue keeps no history (a queue outside Stellwerk's two)."""

    def __init__(self, buses: Buses, event_log: EventLog, history: DeliveryHistory | None) -> None:
        self._buses = buses
        self._log = event_log
        self._history = history

    def _kept(self) -> DeliveryHistory:
        if self._history is None:
            raise NotSupported("this deployment's delivery queue keeps no delivery history")
        return self._history

    async def event(self, principal: Principal, bus: str, event_id: str) -> EventHistory:
        await self._buses.record(principal.tenant_id, bus)
        ref = principal.bus(bus)
        recorded = await self._kept().event_attempts(ref, event_id)
        if not recorded:
            raise NotFound.of(f"delivery history of event {event_id!r} on bus {bus!r}")
        position = recorded[0].attempt.position
        stored = await self._log.read(ref, after=position - 1, limit=1)
        event = None
        if stored and stored[0].position == position and stored[0].id == event_id:
            event = msgspec.json.decode(stored[0].body)
        targets: dict[tuple[str, str], list[AttemptView]] = {}
        for r in recorded:
            targets.setdefault((r.attempt.rule, r.attempt.target_id), []).append(_view(r))
        return EventHistory(
            id=event_id,
            position=position,
            event=event,
            rules=sorted({rule for rule, _ in targets}),
            targets=[
                TargetHistory(rule, target, attempts[-1].outcome, attempts)
                for (rule, target), attempts in sorted(targets.items())
            ],
        )

    async def attempts(
        self,
        principal: Principal,
        bus: str,
        rule: str,
        target: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        outcome: AttemptOutcome | None = None,
        after: int = 0,
        limit: int = DEFAULT_ATTEMPT_PAGE,
    ) -> list[AttemptView]:
        await self._buses.record(principal.tenant_id, bus)
        found = await self._kept().target_attempts(
            principal.bus(bus),
            rule,
            target,
            since=since,
            until=until,
            outcome=outcome,
            after=after,
            limit=limit,
        )
        return [_view(r) for r in found]

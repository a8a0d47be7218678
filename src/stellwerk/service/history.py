"""Delivery history: what happened to an event, and what a target was sent.

Reads the attempts the delivery workers recorded (`stellwerk.seams.DeliveryHistory`); each
read is scoped to the principal's tenant, so another tenant's event id is simply not found.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

import msgspec

from stellwerk.auth import Principal
from stellwerk.routing import redelivery
from stellwerk.seams import (
    ATTEMPT_OUTCOMES,
    DEFAULT_ATTEMPT_PAGE,
    MAX_ATTEMPT_PAGE,
    AttemptOutcome,
    DeliveryHistory,
    EventLog,
    NewDelivery,
    RecordedAttempt,
    RouteSink,
    StoredEvent,
)
from stellwerk.service.buses import Buses
from stellwerk.service.errors import InvalidRequest, NotFound, NotSupported
from stellwerk.storage.control import ControlPlane

__all__ = [
    "ATTEMPT_OUTCOMES",
    "DEFAULT_ATTEMPT_PAGE",
    "MAX_ATTEMPT_PAGE",
    "AttemptOutcome",
    "AttemptView",
    "EventHistory",
    "History",
    "Redelivered",
    "RedeliveredTarget",
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


class RedeliveredTarget(msgspec.Struct):
    rule: str
    target: str


class Redelivered(msgspec.Struct):
    """What a redeliver enqueued: the event, and the targets it goes to again."""

    id: str
    position: int
    targets: list[RedeliveredTarget]


# A redeliver enqueues through the queue's replay path (`RouteSink.route_replay`), which both
# backends have: each under a replay name of its own, so its deliveries are new ones (not
# de-duplicated against the routed ones) and are due now with their event age counted from now.
REDELIVER_PREFIX = "redeliver/"


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

    def __init__(
        self,
        buses: Buses,
        event_log: EventLog,
        history: DeliveryHistory | None,
        *,
        control: ControlPlane | None = None,
        sink: RouteSink | None = None,
        redelivered: Callable[[], None] = lambda: None,
    ) -> None:
        self._buses = buses
        self._log = event_log
        self._history = history
        self._control = control
        self._sink = sink
        self._redelivered = redelivered  # wakes the delivery workers

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

    async def redeliver(
        self,
        principal: Principal,
        bus: str,
        event_id: str,
        *,
        position: int | None = None,
        rule: str | None = None,
        target: str | None = None,
    ) -> Redelivered:
        """Send a stored event again: to `rule`'s targets (or its one `target`), or, without a
        rule, to every target its delivery history names, whatever became of them.

        The event is found by its history, or at `position` (an event no rule matched has no
        history). It is delivered as the rule is now (view, transformer). Another tenant's
        event, or one the log no longer holds, is not found.
        """
        if self._control is None or self._sink is None:
            raise NotSupported("this process cannot enqueue deliveries")
        await self._buses.record(principal.tenant_id, bus)
        if target is not None and rule is None:
            raise InvalidRequest("a target is named with its rule", field="rule")
        ref = principal.bus(bus)
        recorded = await self._history.event_attempts(ref, event_id) if self._history else []
        if recorded:
            position = recorded[0].attempt.position
        if position is None:
            raise NotFound.of(f"delivery history of event {event_id!r} on bus {bus!r}")
        stored = await self._log.read(ref, after=position - 1, limit=1)
        if not stored or stored[0].position != position or stored[0].id != event_id:
            raise NotFound.of(f"event {event_id!r} on bus {bus!r}")
        event = stored[0]
        if rule is not None:
            wanted = [(rule, target)]
        else:
            seen = {(r.attempt.rule, r.attempt.target_id) for r in recorded}
            wanted = [(name, tid) for name, tid in sorted(seen)]
            if not wanted:
                raise InvalidRequest(
                    "the event has no delivery history: name the rule to redeliver it to",
                    field="rule",
                )
        deliveries = await self._deliveries(principal, bus, event, wanted, strict=rule is not None)
        if not deliveries:
            raise InvalidRequest(
                "none of the event's targets can take it now (rules or targets removed,"
                " or a transformer fails on it)",
                field="rule",
            )
        replay = f"{REDELIVER_PREFIX}{uuid.uuid4().hex}"
        await self._sink.route_replay(ref.tenant, replay, 1, 1, deliveries, after=0)
        self._redelivered()
        return Redelivered(
            id=event_id,
            position=position,
            targets=[RedeliveredTarget(d.rule, d.target_id) for d in deliveries],
        )

    async def _deliveries(
        self,
        principal: Principal,
        bus: str,
        event: StoredEvent,
        wanted: list[tuple[str, str | None]],
        *,
        strict: bool,
    ) -> list[NewDelivery]:
        """The deliveries to the wanted (rule, target) pairs (None: all of the rule's targets).
        `strict`: a rule or target that does not exist is NotFound (else skipped)."""
        assert self._control is not None
        out: list[NewDelivery] = []
        for name, tid in wanted:
            saved = await self._control.rules.get(principal.tenant_id, bus, name)
            if saved is None:
                if strict:
                    raise NotFound.of(f"rule {name!r} on bus {bus!r}")
                continue
            specs = [s for s in saved.targets if tid is None or s.id == tid]
            if not specs and strict and tid is not None:
                raise NotFound.of(f"target {tid!r} of rule {name!r} on bus {bus!r}")
            for spec in specs:
                delivery = redelivery(event, saved, spec)
                if delivery is not None:
                    out.append(delivery)
        return out

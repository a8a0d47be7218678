"""The router: turns each bus's log into deliveries, one cursor per bus.

How it is shaped and why: docs/routing.md ("stellwerk.routing.router").
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Protocol

import msgspec
import structlog

from stellwerk.events.envelope import encoded_envelope
from stellwerk.events.scheduled import SOURCE as SCHEDULED_SOURCE
from stellwerk.patterns import Matcher
from stellwerk.refs import BusRef, TenantName
from stellwerk.routing.follower import GATHER_SECONDS, BusFollower
from stellwerk.routing.standby import SiteRouting, Standby
from stellwerk.seams import CursorConflict, EventLog, NewDelivery, RouteSink, StoredEvent
from stellwerk.transform import InputTransformer

DEFAULT_BATCH: Final = 1000
DEFAULT_POLL_SECONDS: Final = 1.0
# A bus passed over lazily is looked at by a sweep only when an append to it was heard of, and
# this often besides (a missed notification).
RECHECK_SECONDS: Final = 30.0
EVENT_CONTENT_TYPE: Final = "application/cloudevents+json"
# What targets of rules with `view: eventbridge` get without a transformer: the envelope.
ENVELOPE_CONTENT_TYPE: Final = "application/json"
PARTITION_KEY: Final = "partitionkey"

log = structlog.get_logger("stellwerk.routing")


class RoutedEvent(Protocol):
    """What a delivery takes from the event it carries: a `StoredEvent` of the log, or an
    `ArchivedEvent` of an archive (replays)."""

    @property
    def id(self) -> str: ...

    @property
    def source(self) -> str: ...

    @property
    def subject(self) -> str | None: ...

    @property
    def position(self) -> int: ...

    @property
    def recorded_time(self) -> datetime: ...


@dataclass(frozen=True, slots=True)
class RouteTarget:
    """What the router needs of one target of a rule.

    `content_type` is what the target receives: by default the event as CloudEvents JSON, or,
    with a transformer, `application/json` when its output is JSON and `text/plain` otherwise.
    With `ordered`, the deliveries of events with the same `partitionkey` extension (or, without
    one, `subject`) go out one at a time in log order; events with neither are not ordered.
    """

    id: str
    transformer: InputTransformer | None = None
    ordered: bool = False
    content_type: str | None = None


@dataclass(frozen=True, slots=True)
class RuleSet:
    """The enabled rules of one bus: their patterns in `matcher`, their targets by rule name.

    Rules that see events in EventBridge's envelope (`view: eventbridge`) have their patterns in
    `envelope` instead: each event is put in the envelope (only when there is such a rule) and
    matched again, and their targets get the envelope (`stellwerk.events.envelope`)."""

    matcher: Matcher
    targets: Mapping[str, Sequence[RouteTarget]] = field(default_factory=dict)
    envelope: Matcher = field(default_factory=Matcher)
    # Scheduled rules (no pattern): each gets the Scheduled Events its ticks make, alone.
    scheduled: frozenset[str] = frozenset()
    # Of those, the ones that see events in EventBridge's envelope.
    scheduled_envelope: frozenset[str] = frozenset()
    # The rules that route on every site (`"sites": "all"`), alone: what this site routes
    # while it stands by for another (`stellwerk.routing.standby`). None: there are none.
    everywhere: RuleSet | None = None
    # Every event after this log position goes through these rules: where the log ended when
    # the earliest of them was enabled (0: not known). A router that passed over the bus
    # without rules lazily starts here, never later (`Router.route_batch`).
    routes_after: int = 0

    def __len__(self) -> int:
        return len(self.matcher) + len(self.envelope) + len(self.scheduled)


RuleSource = Callable[[BusRef], RuleSet]
"""`rules_for(bus)`: the bus's current rule set (cached by the caller; called per batch)."""

SavedRules = Callable[[BusRef], Awaitable[bool]]
"""`has_rules(bus)`: whether the bus has an enabled rule in the control plane now (not in a
cache): what a router asks before it passes over events that no rule it knows of matches."""


class RouterHooks(Protocol):
    def on_routed(self, tenant: TenantName, bus: str, events: int, deliveries: int) -> None: ...

    def on_matched(self, tenant: TenantName, bus: str, rules: Sequence[str]) -> None:
        """An event matched these rules (MatchedEvents per rule, TriggeredRules)."""
        ...


class NoRouterHooks:
    def on_routed(self, tenant: TenantName, bus: str, events: int, deliveries: int) -> None:
        pass

    def on_matched(self, tenant: TenantName, bus: str, rules: Sequence[str]) -> None:
        pass


class Router(BusFollower):
    """Routes the buses that `buses()` names from `log` into `queue`, with `rules_for`'s rules."""

    conflict = CursorConflict
    activity = "routing"

    def __init__(
        self,
        log: EventLog,
        queue: RouteSink,
        rules_for: RuleSource,
        buses: Callable[[], Iterable[BusRef]],
        *,
        appended: asyncio.Event | None = None,
        wake: asyncio.Event | None = None,
        hooks: RouterHooks | None = None,
        batch: int = DEFAULT_BATCH,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        gather_seconds: float = GATHER_SECONDS,
        owns: Callable[[BusRef], bool] | None = None,
        site: SiteRouting | None = None,
        has_rules: SavedRules | None = None,
    ) -> None:
        super().__init__(
            poll_seconds=poll_seconds,
            owns=owns,
            appended=appended,
            gather_seconds=gather_seconds,
        )
        self.log = log
        self.queue = queue
        self.rules_for = rules_for
        self._buses = buses
        self.wake = wake
        self.hooks: RouterHooks = hooks or NoRouterHooks()
        self.batch = batch
        self.site = site or SiteRouting()
        self.has_rules = has_rules
        # Standing by: the cursor and the standby's knowledge at which a bus waits.
        self._waiting: dict[BusRef, tuple[int, object]] = {}
        # Buses without a rule that this router passes over at its sweeps only, not on every
        # append: their cursors lag by up to a sweep. One that gets a rule first moves its
        # cursor to where the rule starts (`RuleSet.routes_after`), never further.
        self._unruled: set[BusRef] = set()
        self._grown: set[BusRef] = set()  # of those, the ones appended to since their pass
        self._looked: dict[BusRef, float] = {}  # when each was passed last (loop time)

    def buses(self) -> Iterable[BusRef]:
        # With those passed over lazily: their appends no longer notify, so the sweeps must
        # find them even if the rule book does not name them.
        return {*self._buses(), *self._unruled}

    def notify(self, bus: BusRef) -> None:
        if bus in self._unruled and not len(self.rules_for(bus)):
            self._grown.add(bus)  # nothing to deliver: the next sweep passes the bus over
            return
        super().notify(bus)

    def rules_changed(self) -> None:
        """Rules were taken in: a bus passed over lazily that has rules now is routed at once
        (an event recorded after the save answered may be waiting already)."""
        for bus in [b for b in self._unruled if len(self.rules_for(b))]:
            super().notify(bus)

    async def step(self, bus: BusRef) -> int:
        return await self.route_batch(bus)

    async def route_bus(self, bus: BusRef) -> int:
        """Route the bus up to its end; return how many events were routed."""
        return await self.follow(bus)

    async def route_batch(self, bus: BusRef) -> int:
        """Route the next batch of the bus's events; return how many (0 at the end)."""
        cursor = self._cursors.get(bus)
        if cursor is None:
            # Read afresh (a start, a lease taken back, a conflict): whoever moved it last,
            # this router does not know that it passed the bus over lazily.
            self._unruled.discard(bus)
            cursor = self._cursors[bus] = await self.queue.cursor(bus)
        standby = self.site.standing_by(bus)
        if standby is not None:
            self._unruled.discard(bus)
        elif not len(self.rules_for(bus)):
            if bus in self._unruled and bus not in self._grown and not self._recheck(bus):
                return 0  # nothing appended since its last pass: no read of its end
            passed = await self._pass_unmatched(bus, cursor)
            if passed is not None:
                return passed
        if bus in self._unruled:
            cursor = await self._start_rules(bus, cursor)
        if standby is not None and self._waiting.get(bus) == (cursor, standby.knowledge(bus)):
            # Without this a standby read every batch after its cursor again on each append
            # (most of a standby's CPU per event), only to stop at the same event.
            return 0
        events = await self.log.read(bus, after=cursor, limit=self.batch)
        if not events:
            return 0
        standby = self.site.standing_by(bus)
        rules = self.rules_for(bus)
        if standby is not None:
            return await self._pass_over(bus, cursor, events, standby, rules.everywhere)
        deliveries = self._deliveries(rules, events)
        position = events[-1].position
        try:
            await self.queue.route(bus, position, deliveries)
        except Exception:
            # Someone else routed these events (`CursorConflict`, or deliveries at or below
            # the stored cursor when they got only part of the way), or the write's outcome is
            # unknown: either way, read the cursor again before the next batch.
            self._cursors.pop(bus, None)
            raise
        self._cursors[bus] = position
        self.hooks.on_routed(bus.tenant, bus.bus, len(events), len(deliveries))
        if deliveries and self.wake is not None:
            self.wake.set()
        return len(events)

    async def _pass_unmatched(self, bus: BusRef, cursor: int) -> int | None:
        """The bus has no rule: move the cursor to the end of its log without reading the
        events (none could match); how many positions it passed, or None when a rule came
        meanwhile (then the events are read and matched as usual). From then on the bus is
        passed over at the sweeps only (`notify`).

        The end is read before the rules are looked at again, in this process and then in the
        control plane (`has_rules`): a rule saved before the end was read is found there even
        when it has not reached this process yet, and one saved later read the log's end
        itself after this one (`RuleSet.routes_after`). So no event recorded after a rule's
        save answered is passed over.
        """
        self._grown.discard(bus)  # before the read: an append during it is heard again
        self._looked[bus] = asyncio.get_running_loop().time()
        last = await self.log.last_position(bus)
        if last <= cursor:
            self._unruled.add(bus)
            return 0
        if len(self.rules_for(bus)) or self.site.standing_by(bus) is not None:
            return None
        if self.has_rules is not None and await self.has_rules(bus):
            # Saved, not taken in here yet: wait for it (`rules_changed`, or the next sweep),
            # passed over lazily meanwhile; it starts where it was saved.
            self._unruled.add(bus)
            return 0
        if len(self.rules_for(bus)) or self.site.standing_by(bus) is not None:
            return None
        try:
            await self.queue.route(bus, last, [])
        except Exception:
            self._cursors.pop(bus, None)
            raise
        self._cursors[bus] = last
        self._unruled.add(bus)
        self.hooks.on_routed(bus.tenant, bus.bus, last - cursor, 0)
        return last - cursor

    def _recheck(self, bus: BusRef) -> bool:
        return asyncio.get_running_loop().time() >= self._looked.get(bus, 0.0) + RECHECK_SECONDS

    async def _start_rules(self, bus: BusRef, cursor: int) -> int:
        """A bus passed over lazily has rules: move its cursor to where they start, without
        reading (every event up to there was recorded before they were saved); the cursor."""
        self._unruled.discard(bus)
        start = self.rules_for(bus).routes_after
        if start <= cursor:
            return cursor
        try:
            await self.queue.route(bus, start, [])
        except Exception:
            self._cursors.pop(bus, None)
            raise
        self._cursors[bus] = start
        self.hooks.on_routed(bus.tenant, bus.bus, start - cursor, 0)
        return start

    async def _pass_over(
        self,
        bus: BusRef,
        cursor: int,
        events: Sequence[StoredEvent],
        standby: Standby,
        everywhere: RuleSet | None,
    ) -> int:
        """Standing by: move the cursor over the events the active site has routed, up to the
        first it has not (`stellwerk.routing.standby`), routing them to the rules that route on
        every site (`everywhere`) on the way; how many (0: wait there)."""
        knowledge = standby.knowledge(bus)
        passed = 0
        for event in events:
            if not standby.routed_elsewhere(bus, event):
                break
            passed += 1
        if passed < len(events):
            self._waiting[bus] = (events[passed - 1].position if passed else cursor, knowledge)
        if not passed:
            return 0
        position = events[passed - 1].position
        deliveries = self._deliveries(everywhere, events[:passed]) if everywhere else []
        try:
            await self.queue.route(bus, position, deliveries)
        except Exception:
            self._cursors.pop(bus, None)
            raise
        self._cursors[bus] = position
        self.hooks.on_routed(bus.tenant, bus.bus, passed, len(deliveries))
        if deliveries and self.wake is not None:
            self.wake.set()
        return passed

    def _deliveries(self, rules: RuleSet, events: Sequence[StoredEvent]) -> list[NewDelivery]:
        out: list[NewDelivery] = []
        if not len(rules):
            return out
        for event in events:
            matched = deliveries_of(event.tenant, event.bus, event, event.body, rules, out)
            if matched:
                self.hooks.on_matched(event.tenant, event.bus, matched)
        return out


def deliveries_of(
    tenant: TenantName,
    bus: str,
    event: RoutedEvent,
    body: bytes,
    rules: RuleSet,
    out: list[NewDelivery],
    *,
    archived_seq: int = 0,
    archived_kept: int = 0,
) -> list[str]:
    """Match one event (whose JSON is `body`) against `rules` and add the deliveries to the
    targets of the rules it matched to `out`; the names of those rules. Also used by replays,
    which name the archived copy that `body` begins with (`NewDelivery.archived_seq`).

    A scheduled rule's tick (`stellwerk.events.scheduled`) goes to that rule alone."""
    if rules.scheduled and event.source == SCHEDULED_SOURCE and event.subject in rules.scheduled:
        rule = event.subject
        value: dict[str, Any] | None = None
        if rule in rules.scheduled_envelope:
            body, value = encoded_envelope(body, tenant)
        for target in rules.targets.get(rule, ()):
            if value is None and (target.transformer is not None or target.ordered):
                value = msgspec.json.decode(body)
            delivery = build_delivery(tenant, bus, event, body, rule, target, value)
            if delivery is not None:
                out.append(delivery)
        return [rule]
    matched = rules.matcher.match(body) if len(rules.matcher) else []
    decoded: dict[str, Any] | None = None
    for rule in matched:
        for target in rules.targets.get(rule, ()):
            if decoded is None and (target.transformer is not None or target.ordered):
                decoded = msgspec.json.decode(body)
            delivery = build_delivery(
                tenant, bus, event, body, rule, target, decoded, archived_seq, archived_kept
            )
            if delivery is not None:
                out.append(delivery)
    if not len(rules.envelope):
        return matched
    envelope, value = encoded_envelope(body, tenant)
    in_envelope = rules.envelope.match(envelope)
    for rule in in_envelope:
        for target in rules.targets.get(rule, ()):
            delivery = build_delivery(tenant, bus, event, envelope, rule, target, value)
            if delivery is not None:
                out.append(delivery)
    return [*matched, *in_envelope]


def build_delivery(
    tenant: TenantName,
    bus: str,
    event: RoutedEvent,
    body: bytes,
    rule: str,
    target: RouteTarget,
    decoded: dict[str, Any] | None,
    archived_seq: int = 0,
    archived_kept: int = 0,
) -> NewDelivery | None:
    """The delivery of `event` (whose JSON is `body`) on `tenant`'s `bus` to one target of a
    matched rule (also used by replays).

    `decoded` is `body` decoded, needed when the target transforms or orders. None comes back
    when the transformer fails (logged; the event can be replayed once the rule is fixed).
    """
    payload = body
    content_type = target.content_type or EVENT_CONTENT_TYPE
    if target.transformer is not None:
        assert decoded is not None
        try:
            text = target.transformer.apply(
                decoded, rule_name=rule, ingestion_time=event.recorded_time
            )
        except Exception:
            # Templates are checked when the rule is saved; one that still fails must not stop
            # the bus. The event stays in the log and can be replayed once the rule is fixed.
            log.exception("transform_failed", tenant=tenant, bus=bus, rule=rule)
            return None
        payload = text.encode()
        content_type = target.content_type or _text_type(payload)
        archived_kept = 0  # not the archived bytes
    ordering_key = None
    if target.ordered and decoded is not None:
        # An envelope has no `partitionkey`: its events are ordered by `subject`.
        key = decoded.get(PARTITION_KEY, event.subject)
        ordering_key = None if key is None else str(key)
    return NewDelivery(
        tenant=tenant,
        bus=bus,
        rule=rule,
        target_id=target.id,
        event_id=event.id,
        event_source=event.source,
        position=event.position,
        recorded_time=event.recorded_time,
        payload=payload,
        content_type=content_type,
        ordering_key=ordering_key,
        archived_seq=archived_seq,
        archived_kept=archived_kept,
    )


def _text_type(payload: bytes) -> str:
    try:
        msgspec.json.decode(payload)
    except msgspec.DecodeError:
        return "text/plain"
    return "application/json"

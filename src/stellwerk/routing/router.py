"""The router: turns each bus's log into deliveries, one cursor per bus.

How it is shaped and why: docs/routing.md ("stellwerk.routing.router").
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Protocol

import msgspec
import structlog

from stellwerk.patterns import Matcher
from stellwerk.refs import TenantName
from stellwerk.routing.follower import GATHER_SECONDS, BusFollower
from stellwerk.seams import CursorConflict, EventLog, NewDelivery, RouteSink, StoredEvent
from stellwerk.transform import InputTransformer

DEFAULT_BATCH: Final = 1000
DEFAULT_POLL_SECONDS: Final = 1.0
EVENT_CONTENT_TYPE: Final = "application/cloudevents+json"
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
    """The enabled rules of one bus: their patterns in `matcher`, their targets by rule name."""

    matcher: Matcher
    targets: Mapping[str, Sequence[RouteTarget]] = field(default_factory=dict)


RuleSource = Callable[[TenantName, str], "RuleSet | Awaitable[RuleSet]"]
"""`rules_for(tenant, bus)`: the bus's current rule set (cached by the caller; called per batch)."""


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
        buses: Callable[[], Iterable[tuple[TenantName, str]]],
        *,
        appended: asyncio.Event | None = None,
        wake: asyncio.Event | None = None,
        hooks: RouterHooks | None = None,
        batch: int = DEFAULT_BATCH,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        gather_seconds: float = GATHER_SECONDS,
        owns: Callable[[TenantName, str], bool] | None = None,
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

    def buses(self) -> Iterable[tuple[TenantName, str]]:
        return self._buses()

    async def step(self, tenant: TenantName, bus: str) -> int:
        return await self.route_batch(tenant, bus)

    async def route_bus(self, tenant: TenantName, bus: str) -> int:
        """Route the bus up to its end; return how many events were routed."""
        return await self.follow(tenant, bus)

    async def route_batch(self, tenant: TenantName, bus: str) -> int:
        """Route the next batch of the bus's events; return how many (0 at the end)."""
        key = (tenant, bus)
        cursor = self._cursors.get(key)
        if cursor is None:
            cursor = self._cursors[key] = await self.queue.cursor(tenant, bus)
        events = await self.log.read(tenant, bus, after=cursor, limit=self.batch)
        if not events:
            return 0
        rules = self.rules_for(tenant, bus)
        if inspect.isawaitable(rules):
            rules = await rules
        deliveries = self._deliveries(rules, events)
        position = events[-1].position
        try:
            await self.queue.route(tenant, bus, position, deliveries)
        except Exception:
            # Someone else routed these events (`CursorConflict`, or deliveries at or below
            # the stored cursor when they got only part of the way), or the write's outcome is
            # unknown: either way, read the cursor again before the next batch.
            self._cursors.pop(key, None)
            raise
        self._cursors[key] = position
        self.hooks.on_routed(tenant, bus, len(events), len(deliveries))
        if deliveries and self.wake is not None:
            self.wake.set()
        return len(events)

    def _deliveries(self, rules: RuleSet, events: Sequence[StoredEvent]) -> list[NewDelivery]:
        out: list[NewDelivery] = []
        matcher = rules.matcher
        if not len(matcher):
            return out
        for event in events:
            matched = matcher.match(event.body)
            if not matched:
                continue
            self.hooks.on_matched(event.tenant, event.bus, matched)
            decoded: dict[str, Any] | None = None
            for rule in matched:
                for target in rules.targets.get(rule, ()):
                    if decoded is None and (target.transformer is not None or target.ordered):
                        decoded = msgspec.json.decode(event.body)
                    delivery = build_delivery(
                        event.tenant, event.bus, event, event.body, rule, target, decoded
                    )
                    if delivery is not None:
                        out.append(delivery)
        return out


def build_delivery(
    tenant: TenantName,
    bus: str,
    event: RoutedEvent,
    body: bytes,
    rule: str,
    target: RouteTarget,
    decoded: dict[str, Any] | None,
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
    ordering_key = None
    if target.ordered and decoded is not None:
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
    )


def _text_type(payload: bytes) -> str:
    try:
        msgspec.json.decode(payload)
    except msgspec.DecodeError:
        return "text/plain"
    return "application/json"

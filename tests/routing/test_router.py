"""The router on a real event log and a real delivery queue (SQLite files in tmp_path)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
from tests.polling import eventually
from tests.storage.eventlog_support import MovableClock, new_event

from stellwerk.patterns import Matcher
from stellwerk.refs import BusRef, TenantName
from stellwerk.routing import NoRouterHooks, Router, RouteTarget, RuleSet, SiteRouting
from stellwerk.routing.follower import BusFollower
from stellwerk.seams import CursorConflict, LeasedDelivery, StoredEvent
from stellwerk.storage.eventlog.sqlite import SqliteEventLog
from stellwerk.storage.queue.sqlite import SqliteDeliveryQueue
from stellwerk.storage.sqlite import LOG_DIR, PIPELINE_FILE
from stellwerk.transform import InputTransformer

ACME_DEFAULT = BusRef(TenantName("acme"), "default")

BUSES = [ACME_DEFAULT]


@dataclass
class Rules:
    """A mutable rule table, as the control plane would keep it per bus."""

    sets: dict[tuple[str, str], RuleSet]

    def __call__(self, bus: BusRef) -> RuleSet:
        return self.sets.get((bus.tenant, bus.bus)) or RuleSet(Matcher())

    def put(
        self,
        tenant: str,
        bus: str,
        rule: str,
        pattern: dict[str, Any],
        *targets: RouteTarget,
        routes_after: int = 0,
    ) -> None:
        current = self.sets.setdefault((tenant, bus), RuleSet(Matcher(), {}))
        current.matcher.add(rule, pattern)
        self.sets[tenant, bus] = RuleSet(
            current.matcher, {**current.targets, rule: targets}, routes_after=routes_after
        )


@dataclass
class Setup:
    log: SqliteEventLog
    queue: SqliteDeliveryQueue
    rules: Rules
    clock: MovableClock

    def router(
        self, *, batch: int = 1000, wake: asyncio.Event | None = None, poll_seconds: float = 1.0
    ) -> Router:
        return Router(
            self.log,
            self.queue,
            self.rules,
            lambda: BUSES,
            batch=batch,
            wake=wake,
            poll_seconds=poll_seconds,
        )

    async def append(self, *ids: str, **kwargs: Any) -> None:
        await self.log.append([new_event(i, **kwargs) for i in ids])

    async def leased(self) -> list[LeasedDelivery]:
        return await self.queue.lease(self.clock(), 10_000, 60)


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    clock = MovableClock()
    async with (
        SqliteEventLog(tmp_path / LOG_DIR, clock=clock) as log,
        SqliteDeliveryQueue(tmp_path / PIPELINE_FILE, clock=clock) as queue,
    ):
        yield Setup(log, queue, Rules({}), clock)


def triples(deliveries: list[LeasedDelivery]) -> Counter[tuple[str, str, str]]:
    return Counter((d.event_id, d.rule, d.target_id) for d in deliveries)


async def test_each_match_becomes_one_delivery_per_target(setup: Setup) -> None:
    setup.rules.put(
        "acme",
        "default",
        "created",
        {"type": ["order.created"]},
        RouteTarget("t1"),
        RouteTarget("t2"),
    )
    setup.rules.put("acme", "default", "orders", {"source": ["/orders"]}, RouteTarget("t3"))
    await setup.append("e1", event_type="order.created")
    await setup.append("e2", event_type="order.paid")
    await setup.append("e3", event_type="order.created", source="/elsewhere")
    await setup.append("e4", event_type="other", source="/elsewhere")
    await setup.router().run(burst=True)
    assert triples(await setup.leased()) == Counter(
        {
            ("e1", "created", "t1"): 1,
            ("e1", "created", "t2"): 1,
            ("e1", "orders", "t3"): 1,
            ("e2", "orders", "t3"): 1,
            ("e3", "created", "t1"): 1,
            ("e3", "created", "t2"): 1,
        }
    )
    assert await setup.queue.cursor(ACME_DEFAULT) == await setup.log.last_position(ACME_DEFAULT)


async def test_payload_is_the_stored_event_or_the_transformer_output(setup: Setup) -> None:
    as_json = InputTransformer({"id": "$.id"}, '{"order": <id>, "rule": "<stellwerk.rule-name>"}')
    as_text = InputTransformer({"id": "$.id"}, "order <id> was created")
    setup.rules.put(
        "acme",
        "default",
        "r",
        {"type": ["order.created"]},
        RouteTarget("raw"),
        RouteTarget("json", as_json),
        RouteTarget("text", as_text),
    )
    await setup.append("e1")
    await setup.router().run(burst=True)
    (stored,) = await setup.log.read(ACME_DEFAULT)
    by_target = {d.target_id: d for d in await setup.leased()}
    raw = by_target["raw"]
    assert (raw.payload, raw.content_type) == (stored.body, "application/cloudevents+json")
    assert (raw.position, raw.recorded_time, raw.event_source) == (
        stored.position,
        stored.recorded_time,
        "/orders",
    )
    assert msgspec.json.decode(by_target["json"].payload) == {"order": "e1", "rule": "r"}
    assert by_target["json"].content_type == "application/json"
    assert (by_target["text"].payload, by_target["text"].content_type) == (
        b'order "e1" was created',
        "text/plain",
    )


async def test_ordered_targets_key_by_partitionkey_then_subject(setup: Setup) -> None:
    setup.rules.put(
        "acme",
        "default",
        "r",
        {"source": ["/orders"]},
        RouteTarget("t", ordered=True),
        RouteTarget("u"),
    )
    await setup.append("p", subject="s1", extensions={"partitionkey": "pk"})
    await setup.append("s", subject="s1")
    await setup.append("n")
    await setup.router().run(burst=True)
    # Unordered and the three ordering keys are all ready: each is the head of its group.
    keys = {(d.target_id, d.event_id): d.ordering_key for d in await setup.leased()}
    assert keys == {
        ("t", "p"): "pk",
        ("t", "s"): "s1",
        ("t", "n"): None,
        ("u", "p"): None,
        ("u", "s"): None,
        ("u", "n"): None,
    }


async def test_a_bus_without_rules_still_moves_its_cursor(setup: Setup) -> None:
    await setup.append("e1", "e2", "e3")
    await setup.router().run(burst=True)
    assert await setup.queue.cursor(ACME_DEFAULT) == await setup.log.last_position(ACME_DEFAULT)
    assert await setup.leased() == []


class CountingLog(SqliteEventLog):
    """The real log, counting the reads that return events, and calling `on_end` when the
    router asks where a bus's log ends."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reads_with_events = 0
        self.on_end: Callable[[], None] = lambda: None

    async def _read_after(self, bus: BusRef, after: int, limit: int) -> list[StoredEvent]:
        events = await super()._read_after(bus, after, limit)
        self.reads_with_events += bool(events)
        return events

    async def last_position(self, bus: BusRef) -> int:
        last = await super().last_position(bus)
        self.on_end()
        return last


@pytest.fixture
async def counted(tmp_path: Path) -> AsyncIterator[Setup]:
    clock = MovableClock()
    async with (
        CountingLog(tmp_path / LOG_DIR, clock=clock) as log,
        SqliteDeliveryQueue(tmp_path / PIPELINE_FILE, clock=clock) as queue,
    ):
        yield Setup(log, queue, Rules({}), clock)


async def test_a_bus_without_rules_is_passed_over_without_reading_its_events(
    counted: Setup,
) -> None:
    log = counted.log
    assert isinstance(log, CountingLog)
    await counted.append(*(f"e{n}" for n in range(5)))
    router = counted.router(batch=2)
    await router.run(burst=True)
    assert log.reads_with_events == 0
    assert await counted.queue.cursor(ACME_DEFAULT) == 5
    # With a rule, the next events are read and matched again, and none before them.
    counted.rules.put("acme", "default", "r", {"source": ["/orders"]}, RouteTarget("t"))
    await counted.append("e5", "e6")
    await router.run(burst=True)
    assert log.reads_with_events == 1
    assert triples(await counted.leased()) == Counter({("e5", "r", "t"): 1, ("e6", "r", "t"): 1})


async def test_a_rule_saved_while_the_end_of_the_log_is_read_still_matches(
    counted: Setup,
) -> None:
    # The router found no rule, then read where the log ends; the rule saved in between is in
    # force for those events (they had not been routed when it was saved).
    log = counted.log
    assert isinstance(log, CountingLog)
    await counted.append("e1", "e2")

    def rule_saved() -> None:
        counted.rules.put("acme", "default", "r", {"source": ["/orders"]}, RouteTarget("t"))

    log.on_end = rule_saved
    await counted.router().run(burst=True)
    assert triples(await counted.leased()) == Counter({("e1", "r", "t"): 1, ("e2", "r", "t"): 1})
    assert await counted.queue.cursor(ACME_DEFAULT) == 2


async def test_a_bus_without_rules_is_passed_over_at_the_sweeps_not_on_each_append(
    counted: Setup,
) -> None:
    log = counted.log
    assert isinstance(log, CountingLog)
    ends: list[None] = []
    log.on_end = lambda: ends.append(None)
    await counted.append("e1")
    router = counted.router()
    await router.run(burst=True)
    assert await counted.queue.cursor(ACME_DEFAULT) == 1
    looked = len(ends)
    await router.run(burst=True)  # a sweep with nothing appended: not even its end is read
    assert len(ends) == looked
    router.appended.clear()
    await counted.append("e2")
    router.notify(ACME_DEFAULT)
    assert not router.appended.is_set()  # no round for it: nothing could be delivered
    await router.run(burst=True)  # a sweep passes it over
    assert await counted.queue.cursor(ACME_DEFAULT) == 2
    assert log.reads_with_events == 0


async def test_a_first_rule_starts_where_its_save_found_the_end_of_the_log(setup: Setup) -> None:
    await setup.append("e1", "e2")
    router = setup.router()
    await router.run(burst=True)  # no rule: passed over, from now on at the sweeps only
    await setup.append("before")  # recorded before the save, not passed over yet
    saved_at = await setup.log.last_position(ACME_DEFAULT)
    setup.rules.put(
        "acme", "default", "r", {"source": ["/orders"]}, RouteTarget("t"), routes_after=saved_at
    )
    await setup.append("after")  # sent the moment the save answered
    router.rules_changed()
    assert router.appended.is_set()  # routed at once, not at the next sweep
    await router.run(burst=True)
    assert triples(await setup.leased()) == Counter({("after", "r", "t"): 1})
    assert await setup.queue.cursor(ACME_DEFAULT) == await setup.log.last_position(ACME_DEFAULT)


async def test_a_rule_saved_but_not_taken_in_yet_holds_the_pass_over(setup: Setup) -> None:
    # Scaled out, a rule reaches the router's process after the save answered, maybe after
    # an event sent at once: the router finds it in the control plane and does not pass
    # over that event.
    saved: set[BusRef] = set()

    async def has_rules(bus: BusRef) -> bool:
        return bus in saved

    router = Router(setup.log, setup.queue, setup.rules, lambda: BUSES, has_rules=has_rules)
    await setup.append("e1")
    await router.run(burst=True)
    saved_at = await setup.log.last_position(ACME_DEFAULT)
    saved.add(ACME_DEFAULT)
    await setup.append("sent-at-the-answer")
    await router.run(burst=True)  # a sweep before this process has the rule
    assert await setup.queue.cursor(ACME_DEFAULT) == saved_at
    setup.rules.put(
        "acme", "default", "r", {"source": ["/orders"]}, RouteTarget("t"), routes_after=saved_at
    )
    router.rules_changed()
    await router.run(burst=True)
    assert triples(await setup.leased()) == Counter({("sent-at-the-answer", "r", "t"): 1})


async def test_a_bus_passed_over_lazily_keeps_its_place_across_a_restart(tmp_path: Path) -> None:
    clock = MovableClock()
    rules = Rules({})
    async with (
        SqliteEventLog(tmp_path / LOG_DIR, clock=clock) as log,
        SqliteDeliveryQueue(tmp_path / PIPELINE_FILE, clock=clock) as queue,
    ):
        await log.append([new_event(i) for i in ("e1", "e2")])
        await Router(log, queue, rules, lambda: BUSES).run(burst=True)
        # Stopped here: a new process starts from the files alone.
    async with (
        SqliteEventLog(tmp_path / LOG_DIR, clock=clock) as log,
        SqliteDeliveryQueue(tmp_path / PIPELINE_FILE, clock=clock) as queue,
    ):
        assert await queue.cursor(ACME_DEFAULT) == 2
        router = Router(log, queue, rules, lambda: BUSES)
        await log.append([new_event("e3")])
        await router.run(burst=True)
        saved_at = await log.last_position(ACME_DEFAULT)
        rules.put(
            "acme", "default", "r", {"source": ["/orders"]}, RouteTarget("t"), routes_after=saved_at
        )
        await log.append([new_event("e4")])
        router.rules_changed()
        await router.run(burst=True)
        leased = await queue.lease(clock(), 10_000, 60)
    assert triples(leased) == Counter({("e4", "r", "t"): 1})


async def test_a_standby_that_becomes_active_routes_from_its_cursor_not_from_a_rules_start(
    setup: Setup,
) -> None:
    # What a standby passes over is what the active site routed; taking over, it routes the
    # rest, however late its rules were mirrored here.
    standby = StandbyFor({ACME_DEFAULT}, set())
    site = SiteRouting()
    site.register(standby)
    router = Router(setup.log, setup.queue, setup.rules, lambda: BUSES, site=site)
    standby.buses.clear()
    await setup.append("e1", source="/orders")
    await router.run(burst=True)  # active, no rule: passed over lazily
    standby.buses.add(ACME_DEFAULT)  # an endpoint makes it stand by
    await setup.append("e2", source="/orders")
    await router.run(burst=True)  # waits at e2: the active site did not route it
    saved_at = await setup.log.last_position(ACME_DEFAULT)
    setup.rules.put(
        "acme", "default", "r", {"source": ["/orders"]}, RouteTarget("t"), routes_after=saved_at
    )
    standby.buses.clear()  # failed over: active now
    await router.run(burst=True)
    assert triples(await setup.leased()) == Counter({("e2", "r", "t"): 1})


async def test_rule_changes_apply_to_events_routed_after_them(setup: Setup) -> None:
    setup.rules.put("acme", "default", "old", {"source": ["/orders"]}, RouteTarget("t"))
    router = setup.router()
    await setup.append("before")
    await router.run(burst=True)
    setup.rules.put("acme", "default", "new", {"source": ["/orders"]}, RouteTarget("t"))
    await setup.append("after")
    await router.run(burst=True)
    assert triples(await setup.leased()) == Counter(
        {("before", "old", "t"): 1, ("after", "old", "t"): 1, ("after", "new", "t"): 1}
    )


async def test_restart_resumes_at_the_cursor_without_repeats_or_gaps(tmp_path: Path) -> None:
    clock = MovableClock()
    rules = Rules({})
    rules.put("acme", "default", "r", {"source": ["/orders"]}, RouteTarget("t1"), RouteTarget("t2"))
    ids = [f"e{n}" for n in range(20)]
    async with (
        SqliteEventLog(tmp_path / LOG_DIR, clock=clock) as log,
        SqliteDeliveryQueue(tmp_path / PIPELINE_FILE, clock=clock) as queue,
    ):
        await log.append([new_event(i) for i in ids])
        router = Router(log, queue, rules, lambda: BUSES, batch=3)
        assert await router.route_batch(BusRef(TenantName("acme"), "default")) == 3
        assert await router.route_batch(BusRef(TenantName("acme"), "default")) == 3
        # Stopped here, between two batches: a new process starts from the files alone.
    async with (
        SqliteEventLog(tmp_path / LOG_DIR, clock=clock) as log,
        SqliteDeliveryQueue(tmp_path / PIPELINE_FILE, clock=clock) as queue,
    ):
        assert await queue.cursor(ACME_DEFAULT) == 6
        await Router(log, queue, rules, lambda: BUSES, batch=3).run(burst=True)
        leased = await queue.lease(clock(), 10_000, 60)
    expected = Counter({(i, "r", t): 1 for i in ids for t in ("t1", "t2")})
    assert triples(leased) == expected


async def test_a_stale_router_is_refused_and_catches_up(setup: Setup) -> None:
    setup.rules.put("acme", "default", "r", {"source": ["/orders"]}, RouteTarget("t"))
    ids = [f"e{n}" for n in range(9)]
    await setup.append(*ids)
    first = setup.router(batch=3)
    second = setup.router(batch=3)
    assert await first.route_batch(BusRef(TenantName("acme"), "default")) == 3
    assert (
        await second.route_batch(BusRef(TenantName("acme"), "default")) == 3
    )  # reads the stored cursor
    with pytest.raises(CursorConflict):
        await first.route_batch(BusRef(TenantName("acme"), "default"))  # still believes it is at 3
    await first.run(burst=True)
    assert triples(await setup.leased()) == Counter({(i, "r", "t"): 1 for i in ids})


async def test_notify_routes_at_once_and_wakes_the_worker(setup: Setup) -> None:
    setup.rules.put("acme", "default", "r", {"source": ["/orders"]}, RouteTarget("t"))
    wake = asyncio.Event()
    # A poll far beyond the test's life: only the notification can make it route.
    router = setup.router(wake=wake, poll_seconds=3600)
    running = asyncio.create_task(router.run())
    await setup.append("e1")
    router.notify(BusRef(TenantName("acme"), "default"))
    await wake.wait()
    router.stop()
    await running
    assert triples(await setup.leased()) == Counter({("e1", "r", "t"): 1})


class GatheringRouter(Router):
    """A router whose gathering pause, after a notification woke it, ends when the test says."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gathering = asyncio.Event()
        self.gathered = asyncio.Event()

    async def gather(self) -> None:
        self.gathering.set()
        await self.gathered.wait()


class Batches(NoRouterHooks):
    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.routed = asyncio.Event()

    def on_routed(self, tenant: str, bus: str, events: int, deliveries: int) -> None:
        self.sizes.append(events)
        self.routed.set()


async def test_appends_notified_one_by_one_are_routed_as_one_batch(setup: Setup) -> None:
    # Woken, the router waits before it reads: what arrives meanwhile is one read and one
    # cursor write, not one per request.
    setup.rules.put("acme", "default", "r", {"source": ["/orders"]}, RouteTarget("t"))
    batches = Batches()
    router = GatheringRouter(
        setup.log, setup.queue, setup.rules, lambda: BUSES, hooks=batches, poll_seconds=3600
    )
    await setup.append("e0")
    running = asyncio.create_task(router.run())
    await asyncio.wait_for(batches.routed.wait(), 30)  # the first round, at start
    batches.routed.clear()
    await setup.append("e1")
    router.notify(BusRef(TenantName("acme"), "default"))
    await asyncio.wait_for(router.gathering.wait(), 30)
    for event_id in ("e2", "e3", "e4", "e5"):
        await setup.append(event_id)
        router.notify(BusRef(TenantName("acme"), "default"))
    assert batches.sizes == [1]
    router.gathered.set()
    await asyncio.wait_for(batches.routed.wait(), 30)
    router.stop()
    await asyncio.wait_for(running, 30)
    assert batches.sizes == [1, 5]
    assert len(await setup.leased()) == 6


@dataclass
class StandbyFor:
    """This site stands by for `buses`; the active site has routed the events in `routed`."""

    buses: set[BusRef]
    routed: set[str]

    def standing_by(self, bus: BusRef) -> bool:
        return bus in self.buses

    def routed_elsewhere(self, bus: BusRef, event: StoredEvent) -> bool:
        return event.id in self.routed

    def knowledge(self, bus: BusRef) -> object:
        return frozenset(self.routed)


class CountedReads(SqliteEventLog):
    """The real log, counting the reads of a bus's events."""

    reads = 0

    async def read(self, bus: BusRef, after: int = 0, limit: int = 1000) -> list[StoredEvent]:
        self.reads += 1
        return await super().read(bus, after, limit)


async def test_a_standby_site_routes_nothing_and_resumes_after_what_the_active_site_routed(
    setup: Setup,
) -> None:
    setup.rules.put("acme", "default", "all", {"source": ["/orders"]}, RouteTarget("t"))
    standby = StandbyFor({ACME_DEFAULT}, {"e1", "e2"})
    site = SiteRouting()
    site.register(standby)
    with pytest.raises(RuntimeError):
        site.register(standby)
    router = Router(setup.log, setup.queue, setup.rules, lambda: BUSES, site=site)
    await setup.append("e1", "e2", "e3", "e4", source="/orders")
    await router.run(burst=True)
    # It moved past what the active site delivered and waits at the first it did not.
    assert await setup.leased() == []
    e2 = (await setup.log.read(ACME_DEFAULT, after=0, limit=2))[-1]
    assert await setup.queue.cursor(ACME_DEFAULT) == e2.position
    standby.routed.add("e4")  # not before e3: the cursor does not jump over e3
    await router.run(burst=True)
    assert await setup.queue.cursor(ACME_DEFAULT) == e2.position
    standby.buses.clear()  # this site is active now
    await router.run(burst=True)
    assert triples(await setup.leased()) == Counter({("e3", "all", "t"): 1, ("e4", "all", "t"): 1})


async def test_a_waiting_standby_reads_the_bus_again_only_once_what_it_knows_moved(
    tmp_path: Path, setup: Setup
) -> None:
    standby = StandbyFor({ACME_DEFAULT}, {"e1"})
    site = SiteRouting()
    site.register(standby)
    async with CountedReads(tmp_path / "counted" / LOG_DIR) as log:
        router = Router(log, setup.queue, setup.rules, lambda: BUSES, site=site)
        await log.append([new_event(i) for i in ("e1", "e2")])
        await router.route_bus(ACME_DEFAULT)
        assert log.reads == 1  # passed e1, waits at e2
        await log.append([new_event("e3")])
        await router.route_bus(ACME_DEFAULT)
        await router.route_bus(ACME_DEFAULT)
        assert log.reads == 1  # e2 would be refused again: not read
        standby.routed.add("e2")
        await router.route_bus(ACME_DEFAULT)
        assert log.reads == 2
        (e2,) = [e for e in await log.read(ACME_DEFAULT) if e.id == "e2"]
        assert await setup.queue.cursor(ACME_DEFAULT) == e2.position  # waits at e3 now


async def test_a_standby_site_routes_its_rules_for_every_site_as_it_passes_events(
    setup: Setup,
) -> None:
    active_only = Matcher()
    active_only.add("here", {"source": ["/orders"]})
    active_only.add("regional", {"source": ["/orders"]})
    everywhere = Matcher()
    everywhere.add("regional", {"source": ["/orders"]})
    targets = {"here": [RouteTarget("t")], "regional": [RouteTarget("r")]}
    setup.rules.sets["acme", "default"] = RuleSet(
        active_only, targets, everywhere=RuleSet(everywhere, targets)
    )
    standby = StandbyFor({ACME_DEFAULT}, {"e1", "e2"})
    site = SiteRouting()
    site.register(standby)
    router = Router(setup.log, setup.queue, setup.rules, lambda: BUSES, site=site)
    await setup.append("e1", "e2", "e3", source="/orders")
    await router.run(burst=True)
    # Standing by: only the rule for every site, and only for the events it passed.
    assert triples(await setup.leased()) == Counter(
        {("e1", "regional", "r"): 1, ("e2", "regional", "r"): 1}
    )
    standby.buses.clear()  # active now: every rule, from where it waited, none again
    await router.run(burst=True)
    assert triples(await setup.leased()) == Counter(
        {("e3", "here", "t"): 1, ("e3", "regional", "r"): 1}
    )


class CountingGathers(BusFollower):
    """A follower of one bus with nothing in it that counts its gathering pauses and rounds."""

    conflict = LookupError
    activity = "counting"
    batch = 1

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gathers = 0
        self.rounds = 0

    def buses(self) -> list[BusRef]:
        return [BusRef(TenantName("acme"), "default")]

    async def step(self, bus: BusRef) -> int:
        return 0

    async def gather(self) -> None:
        self.gathers += 1

    async def before_round(self) -> None:
        self.rounds += 1


async def test_only_a_wake_up_gathers_not_a_sweep_that_came_by_time() -> None:
    """The pause that gathers appends (the router's and the archiver's) is for a notification;
    an idle follower's sweeps, every `poll_seconds`, read at once, without a timer more each."""
    follower = CountingGathers(poll_seconds=0.01)
    running = asyncio.create_task(follower.run())
    await eventually(lambda: follower.rounds >= 5)
    assert follower.gathers == 0
    # Sweeps far apart from now on (from the round after this one): a notification that
    # lands in the same turn of the loop as a sweep's timeout is read by that sweep at once,
    # without a gather, and this test's polls, on timers too, kept landing there.
    follower.poll_seconds = 3600
    bus = BusRef(TenantName("acme"), "default")

    def notified_and_gathered() -> bool:
        follower.notify(bus)  # again on each look, until one lands in the long wait
        return follower.gathers >= 1

    await eventually(notified_and_gathered)
    follower.stop()
    await asyncio.wait_for(running, 30)

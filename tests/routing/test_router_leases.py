"""Two routers on JetStream (event log, delivery queue, leases): each bus routed by one.

As two router processes would run them: each router has its own event log, delivery queue and
leases (connections of its own) on one `nats-server`. Every event must be routed exactly once
(counted by the routers' `on_routed` and by the deliveries in the queue), the buses spread over
both routers, and when one dies abruptly the other takes its buses over.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from tests.nats_support import NatsServer
from tests.polling import eventually
from tests.routing import test_router
from tests.routing.lease_support import crash
from tests.routing.test_router import BUSES as SQLITE_BUSES
from tests.routing.test_router import Setup as SqliteSetup
from tests.routing.test_router import triples
from tests.storage.eventlog_support import ACME_DEFAULT, new_event

from stellwerk.patterns import Matcher
from stellwerk.refs import BusRef, TenantName
from stellwerk.routing import Router, RouteTarget, RuleSet
from stellwerk.seams import LeasedDelivery, bus_owner
from stellwerk.storage.eventlog.jetstream import JetStreamEventLog
from stellwerk.storage.leases import JetStreamLeases
from stellwerk.storage.queue.jetstream import JetStreamDeliveryQueue

TTL = 1.5
setup = test_router.setup  # the SQLite fixture, for the tests of the hooks alone
BUSES = [BusRef(TenantName("acme"), f"b{n}") for n in range(6)]


def rules(bus: BusRef) -> RuleSet:
    matcher = Matcher()
    matcher.add("all", {"source": ["/orders"]})
    return RuleSet(matcher, {"all": [RouteTarget("t")]})


@dataclass
class Routed:
    """A router's `on_routed`: events routed per bus."""

    events: Counter[str] = field(default_factory=Counter)

    def on_routed(self, tenant: str, bus: str, events: int, deliveries: int) -> None:
        self.events[bus] += events

    def on_matched(self, tenant: str, bus: str, rules: Sequence[str]) -> None:
        pass


@dataclass
class RouterProcess:
    leases: JetStreamLeases
    queue: JetStreamDeliveryQueue
    router: Router
    routed: Routed
    task: asyncio.Task[None]


async def router_process(server: NatsServer, name: str, stack: AsyncExitStack) -> RouterProcess:
    log = await stack.enter_async_context(JetStreamEventLog(server.url))
    queue = await stack.enter_async_context(JetStreamDeliveryQueue(server.url))
    leases = JetStreamLeases(server.url, holder=name, ttl=TTL)
    await leases.start()
    stack.push_async_callback(leases.close)
    routed = Routed()
    owns = bus_owner(leases, "router", lambda: BUSES)
    router = Router(log, queue, rules, lambda: BUSES, hooks=routed, poll_seconds=0.05, owns=owns)
    task = asyncio.create_task(router.run())
    stack.push_async_callback(stop, router, task)
    return RouterProcess(leases, queue, router, routed, task)


async def stop(router: Router, task: asyncio.Task[None]) -> None:
    router.stop()
    await asyncio.wait([task])


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as stack:
        yield stack


async def test_two_routers_route_every_event_once_and_one_takes_over_when_the_other_dies(
    nats_server: NatsServer, stack: AsyncExitStack
) -> None:
    one = await router_process(nats_server, "r1", stack)
    two = await router_process(nats_server, "r2", stack)
    names = {f"router/{b.tenant}/{b.bus}" for b in BUSES}
    both = (one.leases, two.leases)
    await eventually(lambda: one.leases.held() and two.leases.held())
    await eventually(lambda: one.leases.held() | two.leases.held() == names)
    appender = await stack.enter_async_context(JetStreamEventLog(nats_server.url))
    for round_ in range(4):
        await appender.append(
            [
                new_event(f"{b}-{round_}-{n}", bus=b)
                for b in (ref.bus for ref in BUSES)
                for n in range(5)
            ]
        )
    await eventually(
        lambda: sum(one.routed.events.values()) + sum(two.routed.events.values()) >= 120
    )
    # Each bus went through one router only, and the buses are spread over both.
    assert not one.routed.events.keys() & two.routed.events.keys()
    assert one.routed.events
    assert two.routed.events
    assert all(
        len([x for x in both if x.holds(f"router/acme/{b}")]) == 1
        for b in (ref.bus for ref in BUSES)
    )

    # The second dies: no stop, no release. The first takes its buses over once they expire.
    taken = set(two.routed.events)
    two.task.cancel()
    await asyncio.wait([two.task])
    await crash(two.leases)
    await two.queue.close()
    for round_ in range(4, 6):
        await appender.append(
            [
                new_event(f"{b}-{round_}-{n}", bus=b)
                for b in (ref.bus for ref in BUSES)
                for n in range(5)
            ]
        )
    await eventually(lambda: one.leases.held() == names)
    await eventually(
        lambda: sum(one.routed.events.values()) + sum(two.routed.events.values()) >= 180
    )
    assert set(one.routed.events) >= taken

    total = Counter(one.routed.events) + Counter(two.routed.events)
    assert total == Counter(dict.fromkeys((ref.bus for ref in BUSES), 30))
    leased = await everything(one.queue, 180)
    assert Counter(d.event_id for d in leased) == Counter(
        {f"{b}-{r}-{n}": 1 for b in (ref.bus for ref in BUSES) for r in range(6) for n in range(5)}
    )


async def everything(queue: JetStreamDeliveryQueue, expected: int) -> list[LeasedDelivery]:
    """Lease every delivery in the queue until `expected` came (or the deadline passed)."""
    leased: list[LeasedDelivery] = []

    async def more() -> bool:
        leased.extend(await queue.lease(datetime.now(UTC), 1000, 600))
        return len(leased) >= expected

    deadline = asyncio.get_running_loop().time() + 30
    while not await more():
        assert asyncio.get_running_loop().time() < deadline, f"{len(leased)} of {expected}"
        await asyncio.sleep(0.05)
    # Nothing more turns up: no delivery was stored twice.
    await asyncio.sleep(0.3)
    assert not await queue.lease(datetime.now(UTC), 1000, 600)
    return leased


# -- the router's hooks on SQLite: only owned buses, and a lost race is no error ----------------


async def test_a_router_routes_only_the_buses_it_owns(setup: SqliteSetup) -> None:
    setup.rules.put("acme", "default", "r", {"source": ["/orders"]}, RouteTarget("t"))
    owned: set[tuple[str, str]] = set()
    first = Router(
        setup.log, setup.queue, setup.rules, lambda: SQLITE_BUSES,
        owns=lambda bus: (bus.tenant, bus.bus) in owned,
    )  # fmt: skip
    other = setup.router()
    await setup.append("e1", "e2")
    await first.run(burst=True)
    assert await setup.queue.cursor(ACME_DEFAULT) == 0
    owned.add(("acme", "default"))
    await first.run(burst=True)
    # The bus moves to the other router, which routes on; it comes back to the first.
    owned.clear()
    await first.run(burst=True)
    await setup.append("e3")
    await other.run(burst=True)
    owned.add(("acme", "default"))
    await setup.append("e4")
    await first.run(burst=True)
    assert triples(await setup.leased()) == Counter(
        {(i, "r", "t"): 1 for i in ("e1", "e2", "e3", "e4")}
    )


async def test_a_router_that_loses_the_race_for_a_batch_carries_on(setup: SqliteSetup) -> None:
    setup.rules.put("acme", "default", "r", {"source": ["/orders"]}, RouteTarget("t"))
    ids = [f"e{n}" for n in range(9)]
    await setup.append(*ids)
    first, second = setup.router(batch=3), setup.router(batch=3)
    assert await first.route_batch(BusRef(TenantName("acme"), "default")) == 3
    assert await second.route_batch(BusRef(TenantName("acme"), "default")) == 3
    # The first still believes the cursor at 3: refused once, it reads the cursor and goes on.
    assert await first.route_bus(BusRef(TenantName("acme"), "default")) == 3
    assert triples(await setup.leased()) == Counter({(i, "r", "t"): 1 for i in ids})


async def test_a_router_that_was_overtaken_part_of_the_way_reads_its_cursor_again(
    setup: SqliteSetup,
) -> None:
    setup.rules.put("acme", "default", "r", {"source": ["/orders"]}, RouteTarget("t"))
    ids = [f"e{n}" for n in range(9)]
    await setup.append(*ids)
    first, second = setup.router(batch=3), setup.router(batch=2)
    assert await first.route_batch(BusRef(TenantName("acme"), "default")) == 3
    assert await second.route_batch(BusRef(TenantName("acme"), "default")) == 2  # up to 5
    # The first's next batch (4 to 6) overlaps what the second routed: the queue refuses
    # deliveries at or below its cursor (a conflict), and the first reads the cursor again
    # and routes the rest.
    assert await first.route_bus(BusRef(TenantName("acme"), "default")) == 4
    assert triples(await setup.leased()) == Counter({(i, "r", "t"): 1 for i in ids})

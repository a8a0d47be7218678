"""What the JetStream delivery queue does beyond the shared contract, on real `nats-server`s.

Crashes of the server (SIGKILL, restart on the same store), several queues on one namespace as
several delivery processes would have them, a router that dies before it moves its cursor, an
index that is behind the table, and a three-node cluster that loses a node.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

import nats
import pytest
from tests import polling
from tests.delivery.queue_support import new_delivery
from tests.nats_support import NatsCluster, NatsServer
from tests.storage.eventlog_support import ACME_DEFAULT, T0, MovableClock

from stellwerk.seams import CursorConflict, DeliveryQueueError, LeasedDelivery
from stellwerk.storage.queue.jetstream import JetStreamDeliveryQueue

LEASE = 60.0
DEADLINE = 30.0
T = TypeVar("T")


async def eventually(probe: Callable[[], Awaitable[T]]) -> T:
    """`probe()`'s first answer that is neither falsy nor a queue error (the cluster heals)."""
    return await polling.eventually(probe, every=0.05, ignoring=DeliveryQueueError)


async def js_api(
    servers: str | list[str], subject: str, request: dict[str, Any] | None = None
) -> Any:
    nc = await nats.connect(servers)
    try:
        reply = await nc.request(subject, json.dumps(request or {}).encode(), timeout=5)
        return json.loads(reply.data)
    finally:
        await nc.close()


@pytest.fixture
async def two_queues(nats_server: NatsServer) -> AsyncIterator[list[JetStreamDeliveryQueue]]:
    """Two queues on one namespace, as two delivery processes would have them."""
    clock = MovableClock()
    queues = [JetStreamDeliveryQueue(nats_server.url, clock=clock) for _ in range(2)]
    for queue in queues:
        await queue.start()
    try:
        yield queues
    finally:
        for queue in queues:
            await queue.close()


async def test_pending_deliveries_and_dead_letters_survive_a_sigkill_of_the_server(
    nats_server: NatsServer,
) -> None:
    clock = MovableClock()
    queue = JetStreamDeliveryQueue(nats_server.url, clock=clock, request_timeout=1.0)
    async with queue:
        batch = [new_delivery(1), new_delivery(2, ordering_key="a"), new_delivery(3)]
        batch.append(new_delivery(4, ordering_key="a"))
        await queue.route(ACME_DEFAULT, 4, batch)
        leased = {d.position: d for d in await queue.lease(T0, 10, LEASE)}
        assert sorted(leased) == [1, 2, 3]
        await queue.dead_letter(leased[1].id, "410 Gone")
        await queue.ack(leased[2].id)  # the ordered group moves on to 4

        nats_server.kill()
        with pytest.raises(DeliveryQueueError):
            await queue.lease(T0, 10, LEASE)
        await nats_server.start_async()

        # The same queue carries on once its connection is back ...
        later = T0 + timedelta(seconds=LEASE)
        again = await eventually(lambda: queue.lease(later, 10, LEASE))
        assert sorted(d.position for d in again) == [3, 4]
        assert again[0].attempts == 0
    # ... and a queue started afresh finds the same: the leases, the dead letter, the cursor.
    async with JetStreamDeliveryQueue(nats_server.url, clock=clock) as fresh:
        assert await fresh.cursor(ACME_DEFAULT) == 4
        assert await fresh.lease(later, 10, LEASE) == []  # still leased from before
        (dead,) = await fresh.dead_letters(ACME_DEFAULT)
        assert (dead.id, dead.position, dead.last_error) == (leased[1].id, 1, "410 Gone")
        assert await fresh.redrive(ACME_DEFAULT) == 1
        (back,) = await fresh.lease(later, 10, LEASE)
        assert back.id == dead.id


async def test_two_queues_never_hold_one_delivery_or_two_of_an_ordered_group(
    two_queues: list[JetStreamDeliveryQueue],
) -> None:
    first, second = two_queues
    batch = [new_delivery(p, ordering_key=f"g{p % 5}" if p % 2 else None) for p in range(1, 201)]
    await first.route(ACME_DEFAULT, 200, batch)
    # The second learns of the deliveries by its scan of the table.
    await eventually(lambda: _pending(second, 200))

    delivered: Counter[int] = Counter()
    held: dict[int, LeasedDelivery] = {}
    now = T0
    deadline = time.monotonic() + DEADLINE
    while len(delivered) < 200:
        assert time.monotonic() < deadline, f"{200 - len(delivered)} never delivered"
        now += timedelta(seconds=1)
        rounds = await asyncio.gather(*(q.lease(now, 50, LEASE) for q in two_queues))
        taken = [d for leased in rounds for d in leased]
        assert not held.keys() & {d.id for d in taken}, "a delivery was leased twice"
        held.update((d.id, d) for d in taken)
        groups = Counter(d.ordering_key for d in held.values() if d.ordering_key)
        assert all(n == 1 for n in groups.values()), f"ordered groups in flight: {groups}"
        # Settle half of what is held, each by the queue that did not lease it (a worker's
        # outcome counts whoever reports it); what the other queue installs it learns by
        # its scan, so a round may find nothing due.
        by_first = {d.id for d in rounds[0]}
        for delivery in list(held.values())[::2]:
            await (second if delivery.id in by_first else first).ack(delivery.id)
            delivered[delivery.position] += 1
            del held[delivery.id]
    assert set(delivered.values()) == {1}


async def _pending(queue: JetStreamDeliveryQueue, expected: int) -> bool:
    return sum(d.pending for d in await queue.depth()) == expected


async def test_routers_racing_on_one_bus_store_each_delivery_once(
    two_queues: list[JetStreamDeliveryQueue],
) -> None:
    batch = [new_delivery(p, ordering_key="a" if p % 3 == 0 else None) for p in range(1, 31)]
    outcomes = await asyncio.gather(
        *(q.route(ACME_DEFAULT, 30, batch) for q in two_queues),
        return_exceptions=True,
    )
    assert sum(o is None for o in outcomes) >= 1
    assert all(o is None or isinstance(o, CursorConflict) for o in outcomes)
    first = two_queues[0]
    await eventually(lambda: _pending(first, 30))  # lanes the other made, by the scan
    positions: list[int] = []
    while leased := await first.lease(T0, 100, LEASE):
        positions += [d.position for d in leased]
        for delivery in leased:
            await first.ack(delivery.id)
    assert sorted(positions) == list(range(1, 31))


async def test_a_router_that_died_before_its_cursor_moved_routes_again_without_duplicates(
    nats_server: NatsServer,
) -> None:
    async with JetStreamDeliveryQueue(nats_server.url) as queue:
        batch = [new_delivery(1), new_delivery(2), new_delivery(3, ordering_key="a")]
        await queue.route(ACME_DEFAULT, 3, batch)
        done, *_ = await queue.lease(T0, 1, LEASE)
        await queue.ack(done.id)
        # The state a crash between the members and the cursor leaves: the cursor behind.
        key = f"$KV.{queue.layout.bucket}.cursor.acme.default"
        nc = await nats.connect(nats_server.url)
        try:
            await nc.jetstream().publish(key, b'{"position":0}')
        finally:
            await nc.close()
        assert await queue.cursor(ACME_DEFAULT) == 0
        members = f"$JS.API.STREAM.INFO.{queue.layout.members_stream}"
        before = (await js_api(nats_server.url, members))["state"]["last_seq"]

        await queue.route(ACME_DEFAULT, 3, batch)

        after = (await js_api(nats_server.url, members))["state"]["last_seq"]
        assert after == before, "the second route stored members again"
        assert await queue.cursor(ACME_DEFAULT) == 3
        again = await queue.lease(T0, 10, LEASE)
        assert sorted(d.position for d in again) == [2, 3]


async def test_an_index_behind_the_table_costs_a_failed_write_not_a_second_lease(
    nats_server: NatsServer,
) -> None:
    clock = MovableClock()
    async with JetStreamDeliveryQueue(nats_server.url, clock=clock) as fresh:
        await fresh.route(ACME_DEFAULT, 2, [new_delivery(1), new_delivery(2)])
        # Scans only as it starts: of later writes by others it knows nothing by itself.
        slow = JetStreamDeliveryQueue(nats_server.url, clock=clock, scan_interval=3600)
        async with slow as behind:
            one, two = await fresh.lease(T0, 10, LEASE)
            await fresh.ack(one.id)

            # `behind` has both as due: its writes fail, it reads both again, leases neither.
            assert await behind.lease(T0, 10, LEASE) == []
            (again,) = await behind.lease(T0 + timedelta(seconds=LEASE), 10, LEASE)
            assert again.id == two.id
            assert await behind.depth() == await fresh.depth()


async def test_three_replicas_in_a_cluster_keep_the_queue_through_a_node_killed(
    nats_cluster: NatsCluster,
) -> None:
    clock = MovableClock()
    queue = JetStreamDeliveryQueue(nats_cluster.url, replicas=3, clock=clock, request_timeout=5.0)
    async with queue:
        for stream in (queue.layout.members_stream, queue.layout.table_stream):
            info = await js_api(nats_cluster.urls, f"$JS.API.STREAM.INFO.{stream}")
            assert info["config"]["num_replicas"] == 3
        # A new R3 stream may still be electing its leader: writes wait for it, as a router's
        # next round would.
        await eventually(functools.partial(_routed, queue, range(1, 21)))
        leased = await queue.lease(T0, 10, LEASE)
        await queue.dead_letter(leased[0].id, "400")

        nats_cluster.servers[0].kill()
        for delivery in leased[1:]:
            await eventually(functools.partial(_acked, queue, delivery))
        rest = await eventually(lambda: queue.lease(T0, 20, LEASE))
        assert sorted(d.position for d in rest) == list(range(11, 21))
        # A read may meet an election of a stream's leader as well: try later, as callers do.
        dead = await eventually(lambda: queue.dead_letters(ACME_DEFAULT))
        assert [d.position for d in dead] == [1]
        await nats_cluster.servers[0].start_async()
        await nats_cluster.wait_whole_async()


async def _routed(queue: JetStreamDeliveryQueue, positions: range) -> bool:
    """Route `positions` (once: a retry after an unknown outcome is a conflict, then done)."""
    try:
        await queue.route(
            ACME_DEFAULT,
            positions[-1],
            [new_delivery(p) for p in positions],
        )
    except CursorConflict:
        assert await queue.cursor(ACME_DEFAULT) >= positions[-1]
    return True


async def _acked(queue: JetStreamDeliveryQueue, delivery: LeasedDelivery) -> bool:
    await queue.ack(delivery.id)
    return True


async def test_a_worker_sees_new_work_after_the_leader_of_the_table_is_killed(
    nats_cluster: NatsCluster,
) -> None:
    """A router and a worker in two processes: the node leading the lane table dies between
    two routes; the worker acks what it held and then leases what was routed after."""
    clock = MovableClock()
    router = JetStreamDeliveryQueue(nats_cluster.url, replicas=3, clock=clock, request_timeout=5.0)
    worker = JetStreamDeliveryQueue(nats_cluster.url, replicas=3, clock=clock, request_timeout=5.0)
    async with router, worker:
        await eventually(functools.partial(_routed, router, range(1, 11)))
        held = await eventually(lambda: worker.lease(T0, 10, LEASE))
        info = await js_api(nats_cluster.urls, f"$JS.API.STREAM.INFO.{worker.layout.table_stream}")
        leader = next(s for s in nats_cluster.servers if s.name == info["cluster"]["leader"])

        leader.kill()
        for delivery in held:
            await eventually(functools.partial(_acked, worker, delivery))

        await eventually(functools.partial(_routed, router, range(11, 21)))
        later = await eventually(lambda: worker.lease(T0, 20, LEASE))
        assert sorted(d.position for d in later) == list(range(11 if len(held) == 10 else 1, 21))
        await leader.start_async()
        await nats_cluster.wait_whole_async()


async def test_a_lease_that_cannot_read_its_deliveries_gives_their_lanes_back(
    nats_server: NatsServer,
) -> None:
    """The lanes' writes win but the members' read fails (here: the members stream is gone;
    in life, an election): the deliveries must be due again now, not once a lease nobody
    holds runs out."""
    clock = MovableClock()
    async with JetStreamDeliveryQueue(nats_server.url, clock=clock) as queue:
        await queue.route(ACME_DEFAULT, 2, [new_delivery(1), new_delivery(2)])
        await js_api(nats_server.url, f"$JS.API.STREAM.DELETE.{queue.layout.members_stream}")
        with pytest.raises(DeliveryQueueError):
            await queue.lease(T0, 10, LEASE)
    # A queue that reads the table afresh finds both waiting, neither in flight.
    async with JetStreamDeliveryQueue(nats_server.url, clock=clock) as fresh:
        (depth,) = await fresh.depth()
        assert (depth.pending, depth.in_flight) == (2, 0)

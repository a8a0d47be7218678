"""The contract every delivery queue backend must keep: routing with the cursor, leases, ordering,
retries, dead letters and redrive. Runs once per backend in `queue_support.BACKENDS`."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest
from tests.delivery.queue_support import QueueFactory, new_delivery
from tests.storage.eventlog_support import ACME_DEFAULT, T0, MovableClock

from stellwerk.refs import BusRef, TenantName
from stellwerk.seams import CursorConflict, DeliveryQueue, ReplayCursor, TargetKey

LEASE = 30.0


async def test_route_stores_deliveries_and_moves_the_cursor(queue: DeliveryQueue) -> None:
    assert await queue.cursor(ACME_DEFAULT) == 0
    await queue.route(ACME_DEFAULT, 5, [new_delivery(2), new_delivery(4)])
    assert await queue.cursor(ACME_DEFAULT) == 5
    assert await queue.cursor(BusRef(TenantName("acme"), "other")) == 0
    leased = await queue.lease(T0, 10, LEASE)
    assert [(d.event_id, d.position, d.attempts) for d in leased] == [("e2", 2, 0), ("e4", 4, 0)]
    assert leased[0].payload == b'{"n":2}'
    assert leased[0].key == TargetKey(TenantName("acme"), "default", "r1", "t1")
    assert leased[0].recorded_time == T0


async def test_a_run_without_deliveries_still_moves_the_cursor(queue: DeliveryQueue) -> None:
    await queue.route(ACME_DEFAULT, 7, [])
    assert await queue.cursor(ACME_DEFAULT) == 7
    assert await queue.lease(T0, 10, LEASE) == []


async def test_routing_again_at_or_below_the_cursor_writes_nothing(queue: DeliveryQueue) -> None:
    await queue.route(ACME_DEFAULT, 5, [new_delivery(5)])
    with pytest.raises(CursorConflict):
        await queue.route(ACME_DEFAULT, 5, [new_delivery(5)])
    with pytest.raises(CursorConflict):
        await queue.route(ACME_DEFAULT, 3, [])
    # Part of the run already routed (by a router that took the bus over): the whole call is
    # refused as a conflict, the cursor stays.
    with pytest.raises(CursorConflict, match="past the delivery at 4"):
        await queue.route(ACME_DEFAULT, 9, [new_delivery(8), new_delivery(4)])
    with pytest.raises(ValueError, match="does not belong"):
        await queue.route(ACME_DEFAULT, 9, [new_delivery(10)])
    with pytest.raises(ValueError, match="does not belong"):
        await queue.route(ACME_DEFAULT, 9, [new_delivery(8, bus="other")])
    assert await queue.cursor(ACME_DEFAULT) == 5
    assert [d.position for d in await queue.lease(T0, 10, LEASE)] == [5]


async def test_routed_deliveries_and_cursor_survive_a_reopen(queue_factory: QueueFactory) -> None:
    async with queue_factory() as queue:
        await queue.route(ACME_DEFAULT, 3, [new_delivery(1), new_delivery(3)])
        first = await queue.lease(T0, 1, LEASE)
    async with queue_factory() as queue:
        assert await queue.cursor(ACME_DEFAULT) == 3
        # The delivery leased before the reopen comes back by the time its lease ended at the
        # latest (a backend may forget leases on a restart: then it is due at once).
        later = T0 + timedelta(seconds=LEASE)
        again = await queue.lease(later, 10, LEASE)
        assert sorted(d.position for d in again) == [1, 3]
        assert first[0].id in {d.id for d in again}


async def test_an_expired_lease_returns_the_delivery(queue: DeliveryQueue) -> None:
    await queue.route(ACME_DEFAULT, 1, [new_delivery(1)])
    (first,) = await queue.lease(T0, 10, LEASE)
    assert await queue.lease(T0 + timedelta(seconds=LEASE - 1), 10, LEASE) == []
    (again,) = await queue.lease(T0 + timedelta(seconds=LEASE), 10, LEASE)
    assert again.id == first.id
    assert again.attempts == 0  # a lost lease is not a failed attempt


async def test_ack_finishes_a_delivery(queue: DeliveryQueue) -> None:
    await queue.route(ACME_DEFAULT, 1, [new_delivery(1)])
    (leased,) = await queue.lease(T0, 10, LEASE)
    await queue.ack(leased.id)
    assert await queue.lease(T0 + timedelta(hours=1), 10, LEASE) == []
    assert await queue.depth() == []


async def test_acks_sent_together_all_finish_and_survive_a_reopen(
    queue_factory: QueueFactory,
) -> None:
    # Enough at once that a backend batching acks has to split them; every other delivery is the
    # head of an ordered group whose next one must become ready.
    count = 1200
    batch = [new_delivery(n, ordering_key=f"g{n}" if n % 2 else None) for n in range(1, count + 1)]
    batch += [new_delivery(count + n, ordering_key=f"g{n}") for n in range(1, count + 1, 2)]
    async with queue_factory() as queue:
        await queue.route(ACME_DEFAULT, 2 * count, batch)
        leased = await queue.lease(T0, 10 * count, LEASE)
        assert sorted(d.position for d in leased) == list(range(1, count + 1))
        await asyncio.gather(*(queue.ack(d.id) for d in leased))
    async with queue_factory() as queue:
        later = T0 + timedelta(seconds=LEASE)
        nexts = await queue.lease(later, 10 * count, LEASE)
        assert sorted(d.position for d in nexts) == list(range(count + 1, 2 * count + 1, 2))


async def test_ack_many_finishes_them_all_and_readies_the_next_of_a_group(
    queue: DeliveryQueue,
) -> None:
    await queue.route(
        ACME_DEFAULT,
        4,
        [new_delivery(1), new_delivery(2, ordering_key="g"), new_delivery(3, ordering_key="g")],
    )
    leased = await queue.lease(T0, 10, LEASE)
    assert sorted(d.position for d in leased) == [1, 2]
    await queue.ack_many([d.id for d in leased])
    await queue.ack_many([])
    (following,) = await queue.lease(T0 + timedelta(hours=1), 10, LEASE)
    assert following.position == 3
    await queue.ack_many([following.id])
    assert await queue.depth() == []


async def test_retry_counts_the_attempt_and_waits(queue: DeliveryQueue) -> None:
    await queue.route(ACME_DEFAULT, 1, [new_delivery(1)])
    (leased,) = await queue.lease(T0, 10, LEASE)
    await queue.retry(leased.id, T0 + timedelta(seconds=90), "503 Service Unavailable")
    assert await queue.lease(T0 + timedelta(seconds=89), 10, LEASE) == []
    (again,) = await queue.lease(T0 + timedelta(seconds=90), 10, LEASE)
    assert (again.id, again.attempts, again.last_error) == (leased.id, 1, "503 Service Unavailable")


async def test_release_gives_work_back_unattempted(
    queue: DeliveryQueue, clock: MovableClock
) -> None:
    await queue.route(ACME_DEFAULT, 2, [new_delivery(1), new_delivery(2)])
    leased = await queue.lease(T0, 10, LEASE)
    await queue.release([d.id for d in leased])
    again = await queue.lease(clock(), 10, LEASE)
    assert [(d.id, d.attempts) for d in again] == [(d.id, 0) for d in leased]


async def test_per_target_limits_cap_one_target_without_starving_others(
    queue: DeliveryQueue,
) -> None:
    slow = [new_delivery(p, target_id="slow") for p in range(1, 6)]
    fast = [new_delivery(p, target_id="fast") for p in range(1, 6)]
    await queue.route(ACME_DEFAULT, 5, slow + fast)
    slow_key = TargetKey(TenantName("acme"), "default", "r1", "slow")
    leased = await queue.lease(T0, 10, LEASE, {slow_key: 0})
    assert sorted(d.target_id for d in leased) == ["fast"] * 5
    leased = await queue.lease(T0, 10, LEASE, {slow_key: 2})
    assert [d.position for d in leased] == [1, 2]


async def test_limit_caps_the_lease(queue: DeliveryQueue) -> None:
    await queue.route(ACME_DEFAULT, 9, [new_delivery(p) for p in range(1, 10)])
    assert [d.position for d in await queue.lease(T0, 4, LEASE)] == [1, 2, 3, 4]
    assert [d.position for d in await queue.lease(T0, 100, LEASE)] == [5, 6, 7, 8, 9]


async def test_ordered_groups_go_one_at_a_time_in_log_order(queue: DeliveryQueue) -> None:
    batch = [
        new_delivery(1, ordering_key="a"),
        new_delivery(2, ordering_key="b"),
        new_delivery(3, ordering_key="a"),
        new_delivery(4),
        new_delivery(5, ordering_key="a"),
    ]
    await queue.route(ACME_DEFAULT, 5, batch)
    first = await queue.lease(T0, 10, LEASE)
    assert [d.position for d in first] == [1, 2, 4]
    a1 = first[0]
    # In flight: nothing more of group "a", even when asked again.
    assert await queue.lease(T0, 10, LEASE) == []
    # A retry keeps the group's turn: the next one waits behind it.
    await queue.retry(a1.id, T0 + timedelta(seconds=10), "timeout")
    assert await queue.lease(T0 + timedelta(seconds=5), 10, LEASE) == []
    (again,) = await queue.lease(T0 + timedelta(seconds=10), 10, LEASE)
    assert again.id == a1.id
    await queue.ack(a1.id)
    (a3,) = await queue.lease(T0 + timedelta(seconds=10), 10, LEASE)
    assert a3.position == 3
    # A dead-lettered head is finished too: the group goes on.
    await queue.dead_letter(a3.id, "410 Gone")
    (a5,) = await queue.lease(T0 + timedelta(seconds=10), 10, LEASE)
    assert a5.position == 5


async def test_ordered_group_continues_across_routed_runs(queue: DeliveryQueue) -> None:
    await queue.route(ACME_DEFAULT, 1, [new_delivery(1, ordering_key="a")])
    (a1,) = await queue.lease(T0, 10, LEASE)
    await queue.route(ACME_DEFAULT, 2, [new_delivery(2, ordering_key="a")])
    assert await queue.lease(T0, 10, LEASE) == []
    await queue.ack(a1.id)
    assert [d.position for d in await queue.lease(T0, 10, LEASE)] == [2]


async def test_dead_letters_are_listed_filtered_and_paged(
    queue: DeliveryQueue, clock: MovableClock
) -> None:
    batch = [new_delivery(p, target_id="t1" if p % 2 else "t2") for p in range(1, 7)]
    batch.append(new_delivery(7, bus="other"))
    await queue.route(ACME_DEFAULT, 6, batch[:-1])
    await queue.route(BusRef(TenantName("acme"), "other"), 7, batch[-1:])
    clock.advance(timedelta(minutes=5))
    for delivery in await queue.lease(clock(), 10, LEASE):
        await queue.dead_letter(delivery.id, f"400 for {delivery.event_id}")
    dead = await queue.dead_letters(ACME_DEFAULT)
    assert [d.event_id for d in dead] == [f"e{p}" for p in range(1, 7)]
    assert dead[0].last_error == "400 for e1"
    assert (dead[0].attempts, dead[0].rule, dead[0].dead_time) == (1, "r1", clock())
    assert dead[0].payload == b'{"n":1}'
    only_t2 = await queue.dead_letters(ACME_DEFAULT, target_id="t2")
    assert [d.event_id for d in only_t2] == ["e2", "e4", "e6"]
    assert await queue.dead_letters(ACME_DEFAULT, rule="nope") == []
    page = await queue.dead_letters(ACME_DEFAULT, limit=4)
    rest = await queue.dead_letters(ACME_DEFAULT, after=page[-1].id, limit=4)
    assert [d.event_id for d in page + rest] == [d.event_id for d in dead]
    assert [d.event_id for d in await queue.dead_letters(BusRef(TenantName("acme"), "other"))] == [
        "e7"
    ]
    assert await queue.dead_letters(BusRef(TenantName("other-tenant"), "default")) == []
    with pytest.raises(ValueError, match="limit"):
        await queue.dead_letters(ACME_DEFAULT, limit=0)


async def test_redrive_selected_and_all(queue: DeliveryQueue, clock: MovableClock) -> None:
    await queue.route(ACME_DEFAULT, 4, [new_delivery(p) for p in range(1, 5)])
    await queue.route(BusRef(TenantName("acme"), "other"), 5, [new_delivery(5, bus="other")])
    for delivery in await queue.lease(clock(), 10, LEASE):
        await queue.retry(delivery.id, clock(), "500")
    for delivery in await queue.lease(clock(), 10, LEASE):
        await queue.dead_letter(delivery.id, "500 again")
    dead = await queue.dead_letters(ACME_DEFAULT)
    assert [d.attempts for d in dead] == [2, 2, 2, 2]
    clock.advance(timedelta(hours=2))
    # An id of another bus is ignored, as are ids that are not dead.
    other_id = (await queue.dead_letters(BusRef(TenantName("acme"), "other")))[0].id
    assert await queue.redrive(ACME_DEFAULT, [dead[1].id, other_id, 99_999]) == 1
    (back,) = await queue.lease(clock(), 10, LEASE)
    assert (back.id, back.attempts, back.last_error) == (dead[1].id, 0, "500 again")
    assert back.age_origin == clock()  # maximum_event_age counts from the redrive
    assert back.recorded_time == T0
    assert await queue.redrive(ACME_DEFAULT) == 3
    assert sorted(d.id for d in await queue.lease(clock(), 10, LEASE)) == sorted(
        d.id for d in dead if d.id != dead[1].id
    )
    assert await queue.dead_letters(ACME_DEFAULT) == []
    assert len(await queue.dead_letters(BusRef(TenantName("acme"), "other"))) == 1


async def test_depth_counts_per_target(queue: DeliveryQueue, clock: MovableClock) -> None:
    batch = [new_delivery(p) for p in range(1, 5)] + [new_delivery(5, target_id="t2")]
    await queue.route(ACME_DEFAULT, 5, batch)
    clock.advance(timedelta(seconds=40))
    leased = await queue.lease(clock(), 2, LEASE)  # e1 and e2
    await queue.dead_letter(leased[0].id, "gone")
    depth = {d.key.target_id: d for d in await queue.depth()}
    t1 = depth["t1"]
    assert (t1.pending, t1.in_flight, t1.dead) == (2, 1, 1)
    assert t1.oldest_pending_seconds == 40.0
    assert (depth["t2"].pending, depth["t2"].in_flight, depth["t2"].dead) == (1, 0, 0)
    # An expired lease is pending again.
    clock.advance(timedelta(seconds=LEASE))
    assert {d.key.target_id: d.pending for d in await queue.depth()}["t1"] == 3


async def test_tenants_and_buses_keep_their_own_cursors(queue: DeliveryQueue) -> None:
    await queue.route(ACME_DEFAULT, 4, [new_delivery(4)])
    await queue.route(
        BusRef(TenantName("globex"), "default"), 2, [new_delivery(2, tenant=TenantName("globex"))]
    )
    assert await queue.cursor(ACME_DEFAULT) == 4
    assert await queue.cursor(BusRef(TenantName("globex"), "default")) == 2
    tenants = sorted(d.tenant for d in await queue.lease(T0, 10, LEASE))
    assert tenants == ["acme", "globex"]


async def test_a_redriven_ordered_delivery_queues_behind_its_group(queue: DeliveryQueue) -> None:
    await queue.route(
        ACME_DEFAULT,
        2,
        [new_delivery(p, ordering_key="a") for p in (1, 2)],
    )
    (a1,) = await queue.lease(T0, 10, LEASE)
    await queue.dead_letter(a1.id, "400")
    (a2,) = await queue.lease(T0, 10, LEASE)
    assert await queue.redrive(ACME_DEFAULT) == 1
    # a2 is in flight: the redriven a1 must not run beside it.
    assert await queue.lease(T0, 10, LEASE) == []
    await queue.ack(a2.id)
    (again,) = await queue.lease(T0, 10, LEASE)
    assert again.id == a1.id


# -- replays: their deliveries and their own cursor in one step -------------------------------


async def test_route_replay_enqueues_and_moves_the_replay_cursor(
    queue: DeliveryQueue, clock: MovableClock
) -> None:
    assert await queue.replay_cursor(TenantName("acme"), "backfill") == ReplayCursor(0, 0)
    clock.advance(timedelta(days=3))  # replayed events are old
    await queue.route_replay(
        TenantName("acme"), "backfill", 7, 3, [new_delivery(2), new_delivery(9)], after=0
    )
    assert await queue.replay_cursor(TenantName("acme"), "backfill") == ReplayCursor(7, 3)
    await queue.route_replay(TenantName("acme"), "backfill", 12, 5, [], after=7)
    assert await queue.replay_cursor(TenantName("acme"), "backfill") == ReplayCursor(12, 8)
    # Replays keep their own cursors, apart from the bus's router cursor and other tenants'.
    assert await queue.cursor(ACME_DEFAULT) == 0
    assert await queue.replay_cursor(TenantName("globex"), "backfill") == ReplayCursor(0, 0)
    assert await queue.replay_cursor(TenantName("acme"), "other") == ReplayCursor(0, 0)
    leased = await queue.lease(clock(), 10, LEASE)
    assert sorted(d.position for d in leased) == [2, 9]
    # Due now and aged from now: the maximum event age must not kill a day-old replayed event.
    assert {d.recorded_time for d in leased} == {T0}
    assert {d.age_origin for d in leased} == {clock()}


async def test_replayed_deliveries_are_not_due_before_the_replay(
    queue: DeliveryQueue, clock: MovableClock
) -> None:
    clock.advance(timedelta(minutes=5))
    await queue.route_replay(TenantName("acme"), "backfill", 1, 1, [new_delivery(1)], after=0)
    assert await queue.lease(clock() - timedelta(seconds=1), 10, LEASE) == []
    assert len(await queue.lease(clock(), 10, LEASE)) == 1


async def test_route_replay_from_anywhere_but_its_cursor_writes_nothing(
    queue: DeliveryQueue,
) -> None:
    await queue.route_replay(TenantName("acme"), "backfill", 5, 2, [new_delivery(1)], after=0)
    with pytest.raises(CursorConflict):  # sent already
        await queue.route_replay(TenantName("acme"), "backfill", 5, 1, [new_delivery(2)], after=0)
    with pytest.raises(CursorConflict):
        await queue.route_replay(TenantName("acme"), "backfill", 4, 1, [], after=3)
    # Another process moved the cursor to 5 while this batch of (3, 8] was read: it overlaps.
    with pytest.raises(CursorConflict):
        await queue.route_replay(TenantName("acme"), "backfill", 8, 2, [new_delivery(4)], after=3)
    with pytest.raises(ValueError, match="holds nothing"):
        await queue.route_replay(TenantName("acme"), "backfill", 5, 0, [], after=5)
    with pytest.raises(ValueError, match="does not belong"):
        await queue.route_replay(
            TenantName("acme"),
            "backfill",
            8,
            1,
            [new_delivery(3, tenant=TenantName("globex"))],
            after=5,
        )
    assert await queue.replay_cursor(TenantName("acme"), "backfill") == ReplayCursor(5, 2)
    assert [d.position for d in await queue.lease(T0, 10, LEASE)] == [1]


async def test_replay_cursor_and_deliveries_survive_a_reopen(
    queue_factory: QueueFactory,
) -> None:
    async with queue_factory() as queue:
        await queue.route_replay(
            TenantName("acme"), "backfill", 3, 3, [new_delivery(p) for p in (1, 2, 3)], after=0
        )
    async with queue_factory() as queue:
        assert await queue.replay_cursor(TenantName("acme"), "backfill") == ReplayCursor(3, 3)
        assert len(await queue.lease(T0 + timedelta(hours=1), 10, LEASE)) == 3
        await queue.route_replay(TenantName("acme"), "backfill", 4, 1, [], after=3)
        assert await queue.replay_cursor(TenantName("acme"), "backfill") == ReplayCursor(4, 4)


async def test_replayed_ordered_deliveries_queue_behind_their_group(
    queue: DeliveryQueue,
) -> None:
    await queue.route(ACME_DEFAULT, 2, [new_delivery(2, ordering_key="a")])
    await queue.route_replay(
        TenantName("acme"), "backfill", 1, 1, [new_delivery(1, ordering_key="a")], after=0
    )
    (first,) = await queue.lease(T0 + timedelta(hours=1), 10, LEASE)
    assert first.position == 2
    await queue.ack(first.id)
    (replayed,) = await queue.lease(T0 + timedelta(hours=1), 10, LEASE)
    assert replayed.position == 1


async def test_oldest_pending_is_the_recorded_time_of_the_oldest_unfinished_delivery(
    queue: DeliveryQueue,
) -> None:
    def at(seconds: int) -> datetime:
        return T0 + timedelta(seconds=seconds)

    other = BusRef(TenantName("acme"), "other")
    assert await queue.oldest_pending(ACME_DEFAULT) is None
    batch = [new_delivery(p, recorded_time=at(p)) for p in (1, 2, 3)]
    batch.append(new_delivery(4, target_id="t2", ordering_key="g", recorded_time=at(4)))
    batch.append(new_delivery(5, target_id="t2", ordering_key="g", recorded_time=at(5)))
    await queue.route(ACME_DEFAULT, 5, batch)
    await queue.route(other, 9, [new_delivery(9, bus="other", recorded_time=at(9))])
    assert await queue.oldest_pending(ACME_DEFAULT) == at(1)
    assert await queue.oldest_pending(other) == at(9)
    assert await queue.oldest_pending(BusRef(TenantName("globex"), "default")) is None
    leased = {d.position: d for d in await queue.lease(at(10), 10, LEASE)}
    # Leased (in flight) is unfinished; acked and dead are finished.
    assert await queue.oldest_pending(ACME_DEFAULT) == at(1)
    await queue.ack(leased[1].id)
    assert await queue.oldest_pending(ACME_DEFAULT) == at(2)
    await queue.retry(leased[2].id, at(100), "503")
    assert await queue.oldest_pending(ACME_DEFAULT) == at(2)
    await queue.dead_letter(leased[2].id, "gone")
    await queue.ack_many([leased[3].id, leased[4].id, leased[9].id])
    # The ordered group's next delivery is unfinished, though not leased yet.
    assert await queue.oldest_pending(ACME_DEFAULT) == at(5)
    (following,) = await queue.lease(at(10), 10, LEASE)
    await queue.ack(following.id)
    assert await queue.oldest_pending(ACME_DEFAULT) is None
    assert await queue.oldest_pending(other) is None

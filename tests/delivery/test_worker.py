"""The delivery worker against a real queue, with small in-test targets that record what they get.

No sleeps: burst runs end when nothing is due, the clock is moved to make retries due, and
targets that hang do so on an `asyncio.Event` the test controls.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import structlog
from tests.delivery.queue_support import new_delivery
from tests.storage.eventlog_support import ACME_DEFAULT, MovableClock

from stellwerk.delivery.backoff import CAP_SECONDS
from stellwerk.delivery.failure_log import FailureLog
from stellwerk.delivery.model import Delivered, GiveUp, Outcome, RetryLater
from stellwerk.delivery.worker import DeliveryWorker, Finish, TargetBinding
from stellwerk.rules import RetryPolicy
from stellwerk.seams import (
    Attempt,
    Delivery,
    DeliveryQueue,
    DeliveryQueueError,
    LeasedDelivery,
    NewDelivery,
    TargetKey,
)

LATER = timedelta(seconds=CAP_SECONDS + 1)  # every backoff delay is shorter


class RecordingTarget:
    """Records each attempt and answers with `answer(delivery)` (Delivered by default)."""

    def __init__(self, answer: Callable[[Delivery], Outcome] | None = None) -> None:
        self.answer = answer or (lambda _: Delivered())
        self.attempts: list[Delivery] = []

    async def deliver(self, delivery: Delivery) -> Outcome:
        self.attempts.append(delivery)
        return self.answer(delivery)

    async def close(self) -> None:
        pass

    @property
    def events(self) -> list[str]:
        return [d.event_id for d in self.attempts]


class GatedTarget:
    """Holds every attempt until `gate` is set; `entered` is set once `expect` attempts wait,
    `all_delivered` once `total` attempts went through."""

    def __init__(self, expect: int = 1, total: int = 1) -> None:
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()
        self.all_delivered = asyncio.Event()
        self.expect = expect
        self.total = total
        self.waiting = 0
        self.delivered: list[str] = []

    async def deliver(self, delivery: Delivery) -> Outcome:
        self.waiting += 1
        if self.waiting >= self.expect:
            self.entered.set()
        await self.gate.wait()
        self.waiting -= 1
        self.delivered.append(delivery.event_id)
        if len(self.delivered) >= self.total:
            self.all_delivered.set()
        return Delivered()

    async def close(self) -> None:
        pass


class CountingHooks:
    def __init__(self) -> None:
        self.attempts: Counter[TargetKey] = Counter()
        self.latencies: list[float] = []
        self.throttled = 0
        self.finished: Counter[Finish] = Counter()

    def on_attempt(self, key: TargetKey, ingestion_seconds: float | None) -> None:
        self.attempts[key] += 1
        if ingestion_seconds is not None:
            self.latencies.append(ingestion_seconds)

    def on_outcome(self, key: TargetKey, outcome: Outcome) -> None:
        if isinstance(outcome, RetryLater) and outcome.throttled:
            self.throttled += 1

    def on_finished(self, key: TargetKey, finish: Finish) -> None:
        self.finished[finish] += 1


async def route(queue: DeliveryQueue, deliveries: Sequence[NewDelivery]) -> None:
    position = max(d.position for d in deliveries)
    await queue.route(ACME_DEFAULT, position, deliveries)


def worker_for(
    queue: DeliveryQueue,
    clock: MovableClock,
    bindings: dict[str, TargetBinding],
    hooks: CountingHooks | None = None,
) -> DeliveryWorker:
    def targets(tenant: str, bus: str, rule: str, target_id: str) -> TargetBinding | None:
        return bindings.get(target_id)

    return DeliveryWorker(queue, targets, clock=clock, hooks=hooks, rng=random.Random(5))


async def test_burst_delivers_everything_due_and_acks_it(
    queue: DeliveryQueue, clock: MovableClock
) -> None:
    target = RecordingTarget()
    hooks = CountingHooks()
    await route(queue, [new_delivery(p) for p in range(1, 51)])
    clock.advance(timedelta(seconds=2))
    await worker_for(queue, clock, {"t1": TargetBinding(target)}, hooks).run(burst=True)
    assert sorted(target.events) == sorted(f"e{p}" for p in range(1, 51))
    assert await queue.depth() == []
    assert hooks.finished == Counter(delivered=50)
    # Ingestion to invocation: from the recorded time to the start of the first attempt.
    assert hooks.latencies == [2.0] * 50


async def test_failures_retry_with_backoff_until_maximum_retry_attempts(
    queue: DeliveryQueue, clock: MovableClock
) -> None:
    target = RecordingTarget(lambda d: RetryLater(f"503 on attempt {d.attempts + 1}"))
    hooks = CountingHooks()
    policy = RetryPolicy(maximum_retry_attempts=3, maximum_event_age_seconds=86_400)
    worker = worker_for(queue, clock, {"t1": TargetBinding(target, policy)}, hooks)
    await route(queue, [new_delivery(1)])
    rounds = 0
    while not await queue.dead_letters(ACME_DEFAULT):
        await worker.run(burst=True)
        clock.advance(LATER)
        rounds += 1
    assert rounds == 4
    assert [d.attempts for d in target.attempts] == [0, 1, 2, 3]
    (dead,) = await queue.dead_letters(ACME_DEFAULT)
    assert dead.attempts == 4
    assert dead.last_error is not None
    assert dead.last_error.startswith("503 on attempt 4")
    assert hooks.finished == Counter(dead_lettered=1)
    assert sum(hooks.attempts.values()) == 4
    assert len(hooks.latencies) == 1  # only the first attempt has an ingestion latency


async def test_failed_attempts_and_dead_letters_reach_the_log_with_counts(
    queue: DeliveryQueue, clock: MovableClock
) -> None:
    failing = RecordingTarget(lambda d: RetryLater("HTTP 503") if d.attempts < 2 else GiveUp("410"))
    healthy = RecordingTarget()
    failures = FailureLog(3600, clock=lambda: clock.now.timestamp())

    def targets(tenant: str, bus: str, rule: str, target_id: str) -> TargetBinding | None:
        return {"t1": TargetBinding(failing), "t2": TargetBinding(healthy)}.get(target_id)

    worker = DeliveryWorker(queue, targets, clock=clock, rng=random.Random(5), failure_log=failures)
    await route(queue, [new_delivery(p, target_id=f"t{1 + p % 2}") for p in range(1, 21)])
    rounds = 0
    with structlog.testing.capture_logs() as lines:
        while len(await queue.dead_letters(ACME_DEFAULT)) < 10:
            await worker.run(burst=True)
            clock.advance(LATER)
            rounds += 1
    # The first failure at once; within the interval the rest only as the worker stops (each
    # burst run is a stop): one line per round, the first round two.
    assert rounds == 3
    assert len(lines) == rounds + 1
    assert all(line["log_level"] == "warning" for line in lines)
    assert {(line["event"], line["rule"], line["target"]) for line in lines} == {
        ("delivery_failures", "r1", "t1")
    }
    assert sum(line["failed_attempts"] for line in lines) == 30
    assert sum(line["dead_lettered"] for line in lines) == 10
    assert lines[-1]["last_error"] == "410"
    assert len(healthy.attempts) == 10


async def test_a_retry_is_not_attempted_before_it_is_due(
    queue: DeliveryQueue, clock: MovableClock
) -> None:
    target = RecordingTarget(
        lambda d: (
            RetryLater("429", retry_after=120, throttled=True) if d.attempts == 0 else Delivered()
        )
    )
    hooks = CountingHooks()
    worker = worker_for(queue, clock, {"t1": TargetBinding(target)}, hooks)
    await route(queue, [new_delivery(1)])
    await worker.run(burst=True)
    clock.advance(timedelta(seconds=119))
    await worker.run(burst=True)
    assert len(target.attempts) == 1  # Retry-After is a floor
    assert hooks.throttled == 1
    clock.advance(timedelta(seconds=CAP_SECONDS))
    await worker.run(burst=True)
    assert [d.attempts for d in target.attempts] == [0, 1]
    assert target.attempts[1].last_error == "429"
    assert hooks.finished == Counter(delivered=1)


async def test_events_too_old_for_another_try_are_dead_lettered(
    queue: DeliveryQueue, clock: MovableClock
) -> None:
    target = RecordingTarget(lambda d: RetryLater("timeout", retry_after=61))
    policy = RetryPolicy(maximum_retry_attempts=185, maximum_event_age_seconds=60)
    await route(queue, [new_delivery(1)])
    await worker_for(queue, clock, {"t1": TargetBinding(target, policy)}).run(burst=True)
    (dead,) = await queue.dead_letters(ACME_DEFAULT)
    assert "maximum_event_age_seconds" in (dead.last_error or "")
    assert len(target.attempts) == 1


async def test_give_up_dead_letters_and_redrive_delivers_again(
    queue: DeliveryQueue, clock: MovableClock
) -> None:
    gone = {"e1", "e3"}
    target = RecordingTarget(lambda d: GiveUp("410 Gone") if d.event_id in gone else Delivered())
    worker = worker_for(queue, clock, {"t1": TargetBinding(target)})
    await route(queue, [new_delivery(p) for p in range(1, 5)])
    await worker.run(burst=True)
    dead = await queue.dead_letters(ACME_DEFAULT)
    assert [(d.event_id, d.last_error) for d in dead] == [("e1", "410 Gone"), ("e3", "410 Gone")]
    gone.clear()  # the receiver is fixed
    assert await queue.redrive(ACME_DEFAULT) == 2
    await worker.run(burst=True)
    assert Counter(target.events) == Counter(e1=2, e2=1, e3=2, e4=1)
    assert await queue.dead_letters(ACME_DEFAULT) == []
    assert await queue.depth() == []


async def test_without_a_dead_letter_queue_failures_are_dropped(
    queue: DeliveryQueue, clock: MovableClock
) -> None:
    hooks = CountingHooks()
    target = RecordingTarget(lambda d: GiveUp("400 Bad Request"))
    binding = TargetBinding(target, dead_letter=False)
    await route(queue, [new_delivery(1), new_delivery(2)])
    await worker_for(queue, clock, {"t1": binding}, hooks).run(burst=True)
    assert await queue.dead_letters(ACME_DEFAULT) == []
    assert await queue.depth() == []
    assert hooks.finished == Counter(dropped=2)


async def test_a_target_that_no_longer_exists_is_dead_lettered(
    queue: DeliveryQueue, clock: MovableClock
) -> None:
    await route(queue, [new_delivery(1, target_id="removed")])
    await worker_for(queue, clock, {}).run(burst=True)
    (dead,) = await queue.dead_letters(ACME_DEFAULT)
    assert dead.target_id == "removed"
    assert "no target 'removed'" in (dead.last_error or "")


async def test_a_target_this_process_has_not_heard_of_yet_is_read_again_and_delivered(
    queue: DeliveryQueue, clock: MovableClock
) -> None:
    # Another process routed it by a rule saved a moment ago; this one's signal is late.
    target = RecordingTarget()
    bindings: dict[str, TargetBinding] = {}
    refreshed: list[tuple[str, str]] = []

    async def refresh(tenant: str, bus: str) -> None:
        refreshed.append((tenant, bus))
        bindings["new"] = TargetBinding(target)

    worker = DeliveryWorker(
        queue,
        lambda tenant, bus, rule, target_id: bindings.get(target_id),
        clock=clock,
        rng=random.Random(5),
        refresh=refresh,
    )
    await route(queue, [new_delivery(1, target_id="new")])
    await worker.run(burst=True)
    assert target.events == ["e1"]
    assert refreshed == [("acme", "default")]
    assert await queue.dead_letters(ACME_DEFAULT) == []
    assert await queue.depth() == []


async def test_a_target_still_unknown_after_reading_again_is_dead_lettered(
    queue: DeliveryQueue, clock: MovableClock
) -> None:
    refreshed: list[tuple[str, str]] = []

    async def refresh(tenant: str, bus: str) -> None:
        refreshed.append((tenant, bus))

    worker = DeliveryWorker(
        queue, lambda *key: None, clock=clock, rng=random.Random(5), refresh=refresh
    )
    await route(queue, [new_delivery(1, target_id="removed")])
    await worker.run(burst=True)
    (dead,) = await queue.dead_letters(ACME_DEFAULT)
    assert dead.target_id == "removed"
    assert refreshed == [("acme", "default")]


async def test_a_deleted_rules_backlog_is_dead_lettered_after_one_reading_of_the_rules(
    queue: DeliveryQueue, clock: MovableClock
) -> None:
    # A rule deleted with a backlog (bench e2e: 20,000 deliveries of a hanging target): its
    # deliveries are dead-lettered after one reading of the bus's rules between them, not one
    # reading each. One each, serialised, held the worker's room for minutes, and a live
    # target's deliveries beside them did not go out.
    live = RecordingTarget()
    gone = RecordingTarget()
    bindings = {"gone": TargetBinding(gone, concurrency=4), "live": TargetBinding(live)}
    refreshed: list[tuple[str, str]] = []

    async def refresh(tenant: str, bus: str) -> None:
        refreshed.append((tenant, bus))

    worker = DeliveryWorker(
        queue,
        lambda tenant, bus, rule, target_id: bindings.get(target_id),
        clock=clock,
        rng=random.Random(5),
        refresh=refresh,
    )
    await route(queue, [new_delivery(1, target_id="gone")])
    await worker.run(burst=True)  # the deleted target's lane is known to the worker
    assert gone.events == ["e1"]
    del bindings["gone"]
    backlog = [new_delivery(p, target_id="gone") for p in range(2, 202)]
    await route(queue, [*backlog, *(new_delivery(p, target_id="live") for p in range(2, 202))])
    await worker.run(burst=True)
    assert refreshed == [("acme", "default")]
    dead = await queue.dead_letters(ACME_DEFAULT, limit=500)
    assert sorted(d.event_id for d in dead) == sorted(d.event_id for d in backlog)
    assert sorted(live.events) == sorted(f"e{p}" for p in range(2, 202))
    assert [(d.key.target_id, d.pending, d.dead) for d in await queue.depth()] == [("gone", 0, 200)]


class CountingLeases:
    """The queue, counting the worker's leases."""

    def __init__(self, queue: DeliveryQueue) -> None:
        self.queue = queue
        self.leases = 0

    async def lease(self, *args: Any, **kwargs: Any) -> list[LeasedDelivery]:
        self.leases += 1
        return await self.queue.lease(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.queue, name)


async def test_one_delivery_at_a_time_costs_one_lease_each(
    queue: DeliveryQueue, clock: MovableClock
) -> None:
    # At a low rate every delivery came alone, and the worker leased three times for each: when
    # it was routed, when its attempt ended (for the lane's next ones) and when its ack was
    # written (for the room it freed), each a hop to the queue's writer; two found nothing.
    arrived: asyncio.Queue[str] = asyncio.Queue()
    target = RecordingTarget()

    def answer(delivery: Delivery) -> Outcome:
        arrived.put_nowait(delivery.event_id)
        return Delivered()

    target.answer = answer
    hooks = CountingHooks()
    counting = CountingLeases(queue)
    worker = DeliveryWorker(
        counting,
        lambda tenant, bus, rule, target_id: TargetBinding(target),
        clock=clock,
        hooks=hooks,
        rng=random.Random(5),
    )
    running = asyncio.create_task(worker.run())
    for position in range(1, 21):
        await route(queue, [new_delivery(position)])
        worker.notify()  # as the router does
        assert await arrived.get() == f"e{position}"
    await worker.stop()
    await running
    assert hooks.finished == Counter(delivered=20)
    assert await queue.depth() == []
    # One each, one as the worker started, and one to spare (41-49 before).
    assert counting.leases <= 20 + 2


async def test_a_hanging_target_does_not_hold_up_another(
    queue: DeliveryQueue, clock: MovableClock
) -> None:
    slow = GatedTarget(expect=2, total=200)
    fast_done = asyncio.Event()
    fast = RecordingTarget()

    def fast_answer(delivery: Delivery) -> Outcome:
        if len(fast.attempts) == 200:
            fast_done.set()
        return Delivered()

    fast.answer = fast_answer
    bindings = {
        "slow": TargetBinding(slow, concurrency=2),
        "fast": TargetBinding(fast, concurrency=4),
    }
    batch = [new_delivery(p, target_id="slow") for p in range(1, 201)]
    batch += [new_delivery(p, target_id="fast") for p in range(1, 201)]
    await route(queue, batch)
    worker = worker_for(queue, clock, bindings)
    running = asyncio.create_task(worker.run())
    await slow.entered.wait()
    await fast_done.wait()
    # Every fast delivery went out while the slow target held its two slots and no more.
    assert len(fast.attempts) == 200
    assert slow.waiting == 2
    assert slow.delivered == []
    slow.gate.set()
    await slow.all_delivered.wait()
    await worker.stop()
    await running
    assert sorted(slow.delivered) == sorted(f"e{p}" for p in range(1, 201))
    assert await queue.depth() == []


async def test_stop_releases_attempts_that_do_not_finish_in_time(
    queue: DeliveryQueue, clock: MovableClock
) -> None:
    slow = GatedTarget()
    await route(queue, [new_delivery(1, target_id="slow")])
    worker = worker_for(queue, clock, {"slow": TargetBinding(slow)})
    running = asyncio.create_task(worker.run())
    await slow.entered.wait()
    await worker.stop(grace=0)
    await running
    (back,) = await queue.lease(clock(), 10, 30)
    assert (back.event_id, back.attempts) == ("e1", 0)


async def test_stop_lets_running_attempts_finish(queue: DeliveryQueue, clock: MovableClock) -> None:
    slow = GatedTarget()
    await route(queue, [new_delivery(1, target_id="slow")])
    worker = worker_for(queue, clock, {"slow": TargetBinding(slow)})
    running = asyncio.create_task(worker.run())
    await slow.entered.wait()
    stopping = asyncio.create_task(worker.stop(grace=60))
    slow.gate.set()
    await stopping
    await running
    assert slow.delivered == ["e1"]
    assert await queue.depth() == []


async def test_work_of_a_crashed_worker_comes_back_after_its_lease(
    queue: DeliveryQueue, clock: MovableClock
) -> None:
    await route(queue, [new_delivery(1), new_delivery(2)])
    # A worker leased both and died without a word.
    assert len(await queue.lease(clock(), 10, 30)) == 2
    target = RecordingTarget()
    worker = worker_for(queue, clock, {"t1": TargetBinding(target)})
    await worker.run(burst=True)
    assert target.attempts == []
    clock.advance(timedelta(seconds=30))
    await worker.run(burst=True)
    assert sorted(target.events) == ["e1", "e2"]


class FlakyLeases:
    """The queue, except that its first `failures` leases fail as an unreachable one does."""

    def __init__(self, queue: DeliveryQueue, failures: int) -> None:
        self._queue = queue
        self.failures = failures

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)

    async def lease(self, *args: Any, **kwargs: Any) -> list[LeasedDelivery]:
        if self.failures > 0:
            self.failures -= 1
            raise DeliveryQueueError("not connected to NATS (reconnecting)")
        return await self._queue.lease(*args, **kwargs)


async def test_a_lease_that_fails_is_tried_again_and_delivery_goes_on(
    queue: DeliveryQueue, clock: MovableClock
) -> None:
    """A JetStream leader election fails leases for a moment; the worker must not stop."""
    await route(queue, [new_delivery(p) for p in range(1, 6)])
    flaky = FlakyLeases(queue, failures=2)
    target = RecordingTarget()
    worker = worker_for(flaky, clock, {"t1": TargetBinding(target)})
    await worker.run(burst=True)
    assert flaky.failures == 0
    assert sorted(target.events) == [f"e{p}" for p in range(1, 6)]
    assert await queue.depth() == []


async def test_ordered_target_gets_each_key_in_log_order_despite_retries(
    queue: DeliveryQueue, clock: MovableClock
) -> None:
    failed_once: set[str] = set()

    def answer(delivery: Delivery) -> Outcome:
        # Every second event of each key fails once: its successors must wait for its retry.
        if delivery.position % 4 in (1, 2) and delivery.event_id not in failed_once:
            failed_once.add(delivery.event_id)
            return RetryLater("500")
        return Delivered()

    target = RecordingTarget(answer)
    batch = [new_delivery(p, ordering_key=f"k{p % 2}") for p in range(1, 21)]
    await route(queue, batch)
    worker = worker_for(queue, clock, {"t1": TargetBinding(target, concurrency=10)})
    while await queue.depth():
        await worker.run(burst=True)
        clock.advance(LATER)
    delivered = [d for d in target.attempts if d.event_id not in failed_once or d.attempts == 1]
    for key in ("k0", "k1"):
        positions = [d.position for d in delivered if d.ordering_key == key]
        assert positions == sorted(positions)
        assert len(positions) == 10


class RecordedAcks:
    """The queue, recording each `ack_many`; the first `failures` of them fail as an unreachable
    queue does."""

    def __init__(self, queue: DeliveryQueue, failures: int = 0) -> None:
        self._queue = queue
        self.failures = failures
        self.writes: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)

    async def ack_many(self, delivery_ids: Sequence[int], attempts: Sequence[Attempt] = ()) -> None:
        self.writes.append(len(delivery_ids))
        if self.failures > 0:
            self.failures -= 1
            raise DeliveryQueueError("not connected to NATS (reconnecting)")
        await self._queue.ack_many(delivery_ids, attempts)


async def test_acks_of_many_deliveries_are_written_together(
    queue: DeliveryQueue, clock: MovableClock
) -> None:
    await route(queue, [new_delivery(p) for p in range(1, 101)])
    recorded = RecordedAcks(queue)
    target = RecordingTarget()
    hooks = CountingHooks()
    worker = DeliveryWorker(
        recorded,
        lambda *key: TargetBinding(target, concurrency=8),
        clock=clock,
        hooks=hooks,
    )
    await worker.run(burst=True)
    assert sorted(target.events) == sorted(f"e{p}" for p in range(1, 101))
    assert sum(recorded.writes) == 100
    assert len(recorded.writes) < 20  # not one write per delivery
    assert hooks.finished == Counter({"delivered": 100})
    assert await queue.depth() == []


async def test_acks_the_queue_failed_to_write_come_back_after_their_lease(
    queue: DeliveryQueue, clock: MovableClock
) -> None:
    await route(queue, [new_delivery(p) for p in range(1, 6)])
    recorded = RecordedAcks(queue, failures=1)
    target = RecordingTarget()
    worker = DeliveryWorker(
        recorded,
        lambda *key: TargetBinding(target),
        clock=clock,
        lease_seconds=30,
    )
    with structlog.testing.capture_logs() as logs:
        await worker.run(burst=True)
    assert [entry["event"] for entry in logs].count("delivery_settle_failed") == 1
    assert sorted(target.events) == [f"e{p}" for p in range(1, 6)]
    clock.advance(timedelta(seconds=30))
    await worker.run(burst=True)
    # Delivered again (at least once), and acked this time.
    assert sorted(target.events) == sorted([f"e{p}" for p in range(1, 6)] * 2)
    assert await queue.depth() == []

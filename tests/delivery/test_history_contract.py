"""The delivery history's contract: attempts written with the outcomes that settle them, read
back per event and per target, scoped to a tenant's bus. Runs on every backend
(`queue_support.BACKENDS`, by the `queue` fixture); the worker tests at the end drive a real
worker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import cast

import pytest
from tests.delivery.queue_support import ACME, QueueFactory, new_delivery
from tests.storage.eventlog_support import ACME_DEFAULT, T0, MovableClock

from stellwerk.clock import to_us, utc_now
from stellwerk.delivery.model import Delivered, GiveUp, Outcome, RetryLater
from stellwerk.delivery.worker import DeliveryWorker, TargetBinding
from stellwerk.refs import BusRef, TenantName
from stellwerk.rules import RetryPolicy
from stellwerk.seams import (
    Attempt,
    AttemptOutcome,
    Delivery,
    DeliveryHistory,
    DeliveryQueue,
    LeasedDelivery,
)

LEASE = 30.0
OTHER = BusRef(TenantName("other"), "default")


def history(queue: DeliveryQueue) -> DeliveryHistory:
    return cast(DeliveryHistory, queue)


def attempt_of(
    d: LeasedDelivery,
    outcome: AttemptOutcome,
    *,
    started: datetime = T0,
    status: int | None = None,
    error: str | None = None,
    excerpt: str = "",
) -> Attempt:
    return Attempt(
        tenant=d.tenant,
        bus=d.bus,
        rule=d.rule,
        target_id=d.target_id,
        event_id=d.event_id,
        position=d.position,
        attempt=d.attempts + 1,
        started_us=to_us(started),
        duration_us=1500,
        outcome=outcome,
        status=status,
        error=error,
        excerpt=excerpt,
    )


async def test_every_settled_attempt_is_read_back_with_its_event(queue: DeliveryQueue) -> None:
    await queue.route(ACME_DEFAULT, 1, [new_delivery(1), new_delivery(1, rule="r2")])
    first, second = await queue.lease(T0, 10, LEASE)
    failed = attempt_of(first, "retrying", status=503, error="HTTP 503", excerpt="busy")
    await queue.retry(first.id, T0, "HTTP 503", failed)
    await queue.dead_letter(second.id, "HTTP 404", attempt_of(second, "dead_lettered", status=404))
    (again,) = await queue.lease(T0 + timedelta(seconds=1), 10, LEASE)
    assert again.attempts == 1
    done = attempt_of(again, "delivered", started=T0 + timedelta(seconds=1), status=200)
    await queue.ack_many([again.id], [done])

    recorded = await history(queue).event_attempts(ACME_DEFAULT, "e1")
    assert [r.attempt for r in recorded] == [
        failed,
        attempt_of(second, "dead_lettered", status=404),
        done,
    ]
    assert [r.attempt.attempt for r in recorded] == [1, 1, 2]
    assert recorded[0].id < recorded[1].id < recorded[2].id
    assert recorded[0].attempt.excerpt == "busy"


async def test_a_dropped_attempt_is_recorded_with_the_single_ack(queue: DeliveryQueue) -> None:
    await queue.route(ACME_DEFAULT, 1, [new_delivery(1)])
    (leased,) = await queue.lease(T0, 10, LEASE)
    dropped = attempt_of(leased, "dropped", error="HTTP 400")
    await queue.ack(leased.id, dropped)
    assert [r.attempt for r in await history(queue).event_attempts(ACME_DEFAULT, "e1")] == [dropped]


async def test_another_tenants_attempts_of_the_same_event_id_stay_apart(
    queue: DeliveryQueue,
) -> None:
    await queue.route(ACME_DEFAULT, 1, [new_delivery(1)])
    await queue.route(OTHER, 1, [new_delivery(1, tenant=OTHER.tenant)])
    leased = await queue.lease(T0, 10, LEASE)
    await queue.ack_many([d.id for d in leased], [attempt_of(d, "delivered") for d in leased])
    mine = await history(queue).event_attempts(ACME_DEFAULT, "e1")
    theirs = await history(queue).event_attempts(OTHER, "e1")
    assert [r.attempt.tenant for r in mine] == [ACME]
    assert [r.attempt.tenant for r in theirs] == [OTHER.tenant]
    assert await history(queue).event_attempts(BusRef(ACME, "elsewhere"), "e1") == []
    assert await history(queue).target_attempts(OTHER, "r1", "t9") == []


async def test_a_targets_attempts_filter_by_time_and_outcome_and_page(
    queue: DeliveryQueue,
) -> None:
    await queue.route(ACME_DEFAULT, 6, [new_delivery(p) for p in range(1, 7)])
    leased = await queue.lease(T0, 10, LEASE)
    # Attempts a minute apart; the odd positions failed for good.
    for n, d in enumerate(leased):
        started = T0 + timedelta(minutes=n)
        if d.position % 2:
            await queue.dead_letter(d.id, "no", attempt_of(d, "dead_lettered", started=started))
        else:
            await queue.ack_many([d.id], [attempt_of(d, "delivered", started=started)])
    read = history(queue).target_attempts

    everything = await read(ACME_DEFAULT, "r1", "t1")
    assert [r.attempt.event_id for r in everything] == [f"e{p}" for p in range(1, 7)]
    dead = await read(ACME_DEFAULT, "r1", "t1", outcome="dead_lettered")
    assert [r.attempt.event_id for r in dead] == ["e1", "e3", "e5"]
    window = await read(
        ACME_DEFAULT, "r1", "t1", since=T0 + timedelta(minutes=2), until=T0 + timedelta(minutes=4)
    )
    assert [r.attempt.event_id for r in window] == ["e3", "e4"]
    page = await read(ACME_DEFAULT, "r1", "t1", limit=4)
    rest = await read(ACME_DEFAULT, "r1", "t1", after=page[-1].id, limit=4)
    assert [r.attempt.event_id for r in page + rest] == [f"e{p}" for p in range(1, 7)]
    assert await read(ACME_DEFAULT, "r2", "t1") == []
    with pytest.raises(ValueError, match="limit"):
        await read(ACME_DEFAULT, "r1", "t1", limit=0)


async def test_history_survives_a_reopen(queue_factory: QueueFactory) -> None:
    factory = queue_factory
    async with factory() as queue:
        await queue.route(ACME_DEFAULT, 1, [new_delivery(1)])
        (leased,) = await queue.lease(T0, 10, LEASE)
        await queue.ack_many([leased.id], [attempt_of(leased, "delivered", status=204)])
    async with factory() as queue:
        (recorded,) = await history(queue).event_attempts(ACME_DEFAULT, "e1")
        assert recorded.attempt.status == 204


async def test_trimming_removes_the_attempts_started_before_the_cut(
    queue: DeliveryQueue,
) -> None:
    await queue.route(ACME_DEFAULT, 4, [new_delivery(p) for p in range(1, 5)])
    leased = await queue.lease(T0, 10, LEASE)
    for n, d in enumerate(leased):
        started = T0 + timedelta(days=n)
        await queue.ack_many([d.id], [attempt_of(d, "delivered", started=started)])
    kept = history(queue)
    assert await kept.trim_history(T0 + timedelta(days=2)) == 2
    left = await kept.target_attempts(ACME_DEFAULT, "r1", "t1")
    assert [r.attempt.event_id for r in left] == ["e3", "e4"]
    assert await kept.trim_history(T0 + timedelta(days=2)) == 0
    assert await kept.trim_history(T0 + timedelta(days=9)) == 2
    assert await kept.event_attempts(ACME_DEFAULT, "e4") == []


def _never(payload: bytes, content_type: str) -> bool:
    return False


async def test_an_erasure_removes_the_attempts_of_its_positions_and_echoes(
    queue: DeliveryQueue,
) -> None:
    await queue.route(ACME_DEFAULT, 3, [new_delivery(p) for p in range(1, 4)])
    await queue.route(OTHER, 1, [new_delivery(1, tenant=OTHER.tenant)])
    leased = await queue.lease(T0, 10, LEASE)
    answers = {1: "ok", 2: "hello ann-1234", 3: "ok"}
    mine = [d for d in leased if d.tenant == ACME]
    theirs = [d for d in leased if d.tenant != ACME]
    await queue.ack_many(
        [d.id for d in leased],
        [attempt_of(d, "delivered", excerpt=answers[d.position]) for d in mine]
        + [attempt_of(d, "delivered", excerpt="ann-1234") for d in theirs],
    )

    erased = await queue.erase(ACME, None, {("default", 1)}, b"ann-1234", _never)

    assert erased.attempts == 2
    left = await history(queue).target_attempts(ACME_DEFAULT, "r1", "t1")
    assert [r.attempt.event_id for r in left] == ["e3"]
    assert len(await history(queue).event_attempts(OTHER, "e1")) == 1
    # An unknown value (no needle) takes nothing but the positions'.
    assert (await queue.erase(ACME, "default", {("audit", 3)}, b"", _never)).attempts == 0
    assert (await queue.erase(ACME, "default", {("default", 3)}, b"", _never)).attempts == 1


class Answers:
    """A target that answers with the given outcomes in turn."""

    def __init__(self, *outcomes: Outcome) -> None:
        self.outcomes = list(outcomes)

    async def deliver(self, delivery: Delivery) -> Outcome:
        return self.outcomes.pop(0)

    async def close(self) -> None:
        pass


async def test_a_worker_records_each_attempt_with_its_number_status_and_answer(
    queue: DeliveryQueue, clock: MovableClock
) -> None:
    await queue.route(ACME_DEFAULT, 2, [new_delivery(1), new_delivery(2)])
    target = Answers(
        RetryLater("HTTP 503 Service Unavailable", status=503, answer="try later"),
        GiveUp("HTTP 410 Gone", status=410, answer="gone"),
        Delivered("HTTP 200", status=200, answer="ok"),
    )
    binding = TargetBinding(target, RetryPolicy(), concurrency=1)
    worker = DeliveryWorker(queue, lambda *key: binding, clock=clock)
    await worker.run(burst=True)
    clock.now += timedelta(hours=1)
    await worker.run(burst=True)

    recorded = [r.attempt for r in await history(queue).target_attempts(ACME_DEFAULT, "r1", "t1")]
    summary = [(a.event_id, a.attempt, a.outcome, a.status, a.error, a.excerpt) for a in recorded]
    assert summary == [
        ("e1", 1, "retrying", 503, "HTTP 503 Service Unavailable", "try later"),
        ("e2", 1, "dead_lettered", 410, "HTTP 410 Gone", "gone"),
        ("e1", 2, "delivered", 200, None, "ok"),
    ]
    assert recorded[0].started == T0
    assert recorded[2].started == T0 + timedelta(hours=1)
    assert all(a.duration_us >= 0 for a in recorded)


async def test_a_worker_on_the_wall_clock_records_when_the_attempt_started(
    queue: DeliveryQueue,
) -> None:
    """The default clock is read in µs without a datetime (`clock.now_us`); it is the same
    clock as `utc_now`, so the start lies between two readings of it."""
    await queue.route(ACME_DEFAULT, 1, [new_delivery(1)])
    binding = TargetBinding(Answers(Delivered()), RetryPolicy())
    before = utc_now()
    await DeliveryWorker(queue, lambda *key: binding).run(burst=True)
    after = utc_now()
    (recorded,) = await history(queue).event_attempts(ACME_DEFAULT, "e1")
    assert before <= recorded.attempt.started <= after


async def test_a_worker_without_history_records_nothing(
    queue: DeliveryQueue, clock: MovableClock
) -> None:
    await queue.route(ACME_DEFAULT, 1, [new_delivery(1)])
    binding = TargetBinding(Answers(Delivered()), RetryPolicy())
    await DeliveryWorker(queue, lambda *key: binding, clock=clock, history=False).run(burst=True)
    assert await history(queue).event_attempts(ACME_DEFAULT, "e1") == []


async def test_a_window_in_the_future_or_past_of_what_was_stored_reads_right(
    queue: DeliveryQueue,
) -> None:
    """On JetStream `since` seeks by the time attempts were stored (the real clock), not by
    their start: a window after everything stored is empty, one before it finds all."""
    await queue.route(ACME_DEFAULT, 2, [new_delivery(1), new_delivery(2)])
    leased = await queue.lease(T0, 10, LEASE)
    await queue.ack_many([d.id for d in leased], [attempt_of(d, "delivered") for d in leased])
    read = history(queue).target_attempts
    later = datetime.now(UTC) + timedelta(days=1)
    assert await read(ACME_DEFAULT, "r1", "t1", since=later) == []
    found = await read(ACME_DEFAULT, "r1", "t1", since=T0 - timedelta(days=1), limit=1)
    rest = await read(ACME_DEFAULT, "r1", "t1", since=T0, after=found[0].id)
    assert [r.attempt.event_id for r in found + rest] == ["e1", "e2"]

"""The delivery worker: lease due deliveries, hand each to its target, settle the outcome.

Each target has a lane: the deliveries leased for it, and up to its concurrency of runner tasks
that take them one after another (no task per delivery). Acks are written together by one task.
How it is shaped and why: docs/delivery.md ("stellwerk.delivery.worker"). Failed attempts, dead
letters and drops also go to the log, one warning per target per interval (`FailureLog`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal, Protocol

import structlog

from stellwerk.clock import to_us, us_clock, utc_now
from stellwerk.delivery.backoff import Verdict, decide
from stellwerk.delivery.failure_log import FailureLog
from stellwerk.delivery.model import Delivered, GiveUp, Outcome, RetryLater, Target
from stellwerk.refs import TenantName
from stellwerk.rules import RetryPolicy
from stellwerk.seams import (
    Attempt,
    AttemptOutcome,
    DeliveryQueueError,
    LeasedDelivery,
    TargetKey,
    WorkQueue,
)

DEFAULT_CONCURRENCY: Final = 16
DEFAULT_MAX_IN_FLIGHT: Final = 512
DEFAULT_LEASE_SECONDS: Final = 60.0
DEFAULT_POLL_SECONDS: Final = 1.0
# After a failed lease (the queue out of reach), how long before the next try.
LEASE_RETRY_SECONDS: Final = 0.25
DEFAULT_STOP_GRACE_SECONDS: Final = 10.0
# Budgets' worth of deliveries leased ahead per target: when a slot frees, the next delivery
# starts at once instead of after a round trip to the queue's writer.
PREFETCH: Final = 1
# Acks wait this long for company before they are written (unless this many are waiting, or
# one of them frees the next delivery of an ordered group): one write and one commit for many,
# where a commit per few acks rewrote the same pages again and again. A crash in between makes
# those deliveries come again, as any lost ack does.
ACK_LINGER_SECONDS: Final = 0.01
ACK_BATCH: Final = 256

log = structlog.get_logger("stellwerk.delivery")

Finish = Literal["delivered", "dead_lettered", "dropped"]


@dataclass(frozen=True, slots=True)
class TargetBinding:
    """A target as the control plane configured it: where to deliver and how to fail."""

    target: Target
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy)
    dead_letter: bool = True
    concurrency: int = DEFAULT_CONCURRENCY


TargetResolver = Callable[[TenantName, str, str, str], TargetBinding | None]
"""`targets(tenant, bus, rule, target_id)`: the binding, or None when it no longer exists."""

Refresh = Callable[[TenantName, str], Awaitable[None]]
"""`refresh(tenant, bus)`: read the bus's rules and targets again (from the control plane)."""


class DeliveryHooks(Protocol):
    def on_attempt(self, key: TargetKey, ingestion_seconds: float | None) -> None: ...

    def on_outcome(self, key: TargetKey, outcome: Outcome) -> None: ...

    def on_finished(self, key: TargetKey, finish: Finish) -> None: ...


class NoHooks:
    def on_attempt(self, key: TargetKey, ingestion_seconds: float | None) -> None:
        pass

    def on_outcome(self, key: TargetKey, outcome: Outcome) -> None:
        pass

    def on_finished(self, key: TargetKey, finish: Finish) -> None:
        pass


class _Lane:
    """A target's leased deliveries (`waiting`) and its runners: at most `budget` of them, each
    attempting one delivery at a time, so the target's concurrency holds by construction."""

    __slots__ = ("budget", "busy", "key", "runners", "waiting")

    def __init__(self, key: TargetKey, budget: int) -> None:
        self.key = key
        self.budget = budget
        self.waiting: deque[LeasedDelivery] = deque()
        self.busy = 0  # attempts under way
        self.runners = 0  # runner tasks alive (started, attempting, or about to take the next)


class DeliveryWorker:
    """Delivers what `queue` holds to the targets that `targets` resolves.

    Set `wake` (or call `notify`) after routing so new deliveries start at once. `clock` is the
    time used for leases, backoff and latency (a test can move it); `rng` drives the jitter.
    With `history` (the default) every attempt goes to the queue with its outcome, for the
    delivery history.

    `refresh(tenant, bus)` reads a bus's rules again before a delivery whose rule or target
    this process does not know is dead-lettered: another process may have routed it by a rule
    saved a moment ago, whose change signal has not reached this one yet.
    """

    def __init__(
        self,
        queue: WorkQueue,
        targets: TargetResolver,
        *,
        hooks: DeliveryHooks | None = None,
        clock: Callable[[], datetime] = utc_now,
        wake: asyncio.Event | None = None,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        rng: random.Random | None = None,
        failure_log: FailureLog | None = None,
        history: bool = True,
        refresh: Refresh | None = None,
    ) -> None:
        self.queue = queue
        self.targets = targets
        self.refresh = refresh
        self.hooks: DeliveryHooks = hooks or NoHooks()
        self.clock = clock
        # Attempts start in µs: under the default clock read without making a datetime, which
        # per attempt cost about as much as recording the attempt in the history did.
        self._clock_us = us_clock(clock)
        self.wake = wake or asyncio.Event()
        self.max_in_flight = max_in_flight
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self._rng = rng
        self.failure_log = failure_log or FailureLog()
        self.history = history
        self._lanes: dict[TargetKey, _Lane] = {}
        # Every delivery leased and not settled yet: waiting in a lane, attempted, or with its
        # outcome being written. A lease of one of them again only extends ours.
        self._owned: set[int] = set()
        self._attempting: dict[int, LeasedDelivery] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # runners, failures' settles, orphans
        self._acks: list[tuple[int, TargetKey]] = []
        self._attempts: list[Attempt] = []  # those of the acks waiting
        self._acks_now = False  # an ack waiting frees an ordered group's next delivery
        self._acking: asyncio.Task[None] | None = None
        self._stopping = False
        self._grace = DEFAULT_STOP_GRACE_SECONDS
        self._running: asyncio.Event | None = None
        # Leases done so far, and per bus the reading of its rules last started (after which
        # lease, and the reading): deliveries of an unknown rule share one (`_read_rules`).
        self._leases_done = 0
        # The last lease took everything due (fewer than there was room for, and no target held
        # to its limit): until deliveries are routed or come due, a lease finds nothing more.
        self._drained = False
        self._burst = False
        self._acks_ordered = False  # an ack waiting frees an ordered group's next delivery
        self._readings: dict[tuple[TenantName, str], tuple[int, asyncio.Future[None]]] = {}

    def notify(self) -> None:
        self.wake.set()

    @property
    def in_flight(self) -> int:
        """Deliveries attempted or being settled (not those waiting for a slot)."""
        return len(self._owned) - sum(len(lane.waiting) for lane in self._lanes.values())

    async def run(self, *, burst: bool = False) -> None:
        """Deliver until `stop()`; with `burst`, until nothing is due or running."""
        self._stopping = False
        self._burst = burst
        done = self._running = asyncio.Event()
        try:
            while not self._stopping:
                self.wake.clear()
                self.failure_log.flush()
                try:
                    await self._start_due()
                except Exception as exc:
                    # The queue is out of reach (a JetStream leader election, a broken
                    # connection): what is running goes on, and leasing is tried again shortly.
                    # Letting this end the loop would stop delivery for good.
                    log.warning("delivery_lease_failed", error=f"{type(exc).__name__}: {exc}")
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(LEASE_RETRY_SECONDS):
                            await self._stopped()
                    continue
                # Whatever finished during the lease set `wake`: its room was not offered yet.
                if burst and not self._owned and not self.wake.is_set():
                    break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll_seconds):
                        await self.wake.wait()
        finally:
            await self._drain()
            self.failure_log.flush(everything=True)
            done.set()

    async def _stopped(self) -> None:
        """Return once `stop()` was called (it sets `wake` too, but so does much else)."""
        while not self._stopping:
            self.wake.clear()
            await self.wake.wait()

    async def stop(self, grace: float = DEFAULT_STOP_GRACE_SECONDS) -> None:
        """Stop leasing; wait up to `grace` s for running attempts, release the rest; return
        when `run` has returned."""
        self._stopping = True
        self._grace = grace
        self.wake.set()
        if self._running is not None:
            await self._running.wait()

    # -- leasing -------------------------------------------------------------------------------

    async def _start_due(self) -> None:
        room = self.max_in_flight - len(self._owned)
        if room <= 0:
            self._drained = False
            return
        limits = {}
        targets = self.targets
        for known_key, known in self._lanes.items():
            if targets(*known_key) is None:
                # Its rule or target is gone: what is left of it is dead-lettered without an
                # attempt, so it is not held to the budget the target had.
                continue
            # Up to a budget's worth more than the free slots, held back until a slot frees.
            free = (1 + PREFETCH) * known.budget - known.busy - len(known.waiting)
            if free < room:
                limits[known_key] = max(0, free)
        leased = await self.queue.lease(self.clock(), room, self.lease_seconds, limits)
        self._leases_done += 1
        surplus: list[int] = []
        fed: dict[TargetKey, _Lane] = {}
        got: dict[TargetKey, int] = {}
        owned = self._owned
        for delivery in leased:
            key = delivery.key
            got[key] = got.get(key, 0) + 1
            if delivery.id in owned:
                continue  # our own attempt outlived its lease; the new lease just extends it
            lane = fed.get(key)
            if lane is None:
                binding = targets(*key)
                if binding is None:
                    owned.add(delivery.id)
                    self._spawn(self._orphaned(delivery))
                    continue
                lane = self._lanes.get(key)
                if lane is None:
                    lane = self._lanes[key] = _Lane(key, binding.concurrency)
                lane.budget = binding.concurrency
                fed[key] = lane
            if lane.busy + len(lane.waiting) < (1 + PREFETCH) * lane.budget:
                lane.waiting.append(delivery)
                owned.add(delivery.id)
            else:
                # Leased before its budget was known to us; give it back for a later round.
                surplus.append(delivery.id)
        self._drained = (
            len(leased) < room
            and not surplus
            and all(got.get(key, 0) < cap for key, cap in limits.items())
        )
        for fed_lane in fed.values():
            self._man(fed_lane)
        if surplus:
            await self.queue.release(surplus)

    def _man(self, lane: _Lane) -> None:
        """Start runners for what waits in the lane, up to its budget."""
        for _ in range(min(lane.budget - lane.runners, len(lane.waiting))):
            lane.runners += 1
            self._spawn(self._run_lane(lane))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- attempts ------------------------------------------------------------------------------

    async def _run_lane(self, lane: _Lane) -> None:
        """Attempt the lane's deliveries one after another until none waits (or the budget
        shrank below the runners)."""
        try:
            waiting = lane.waiting
            while waiting and lane.runners <= lane.budget and not self._stopping:
                delivery = waiting.popleft()
                binding = self.targets(*lane.key)
                if binding is None:
                    await self._orphaned(delivery)
                else:
                    await self._attempt(lane, delivery, binding)
        finally:
            lane.runners -= 1

    async def _attempt(self, lane: _Lane, delivery: LeasedDelivery, binding: TargetBinding) -> None:
        key = lane.key
        delivery_id = delivery.id
        self._attempting[delivery_id] = delivery
        lane.busy += 1
        try:
            started_us = self._clock_us()
            if delivery.attempts == 0:
                latency = (started_us - to_us(delivery.recorded_time)) / 1e6
                self.hooks.on_attempt(key, latency)
            else:
                self.hooks.on_attempt(key, None)
            began = time.perf_counter_ns()
            try:
                outcome = await binding.target.deliver(delivery)
            except Exception as exc:  # the protocol says return an Outcome; a bug must not stick
                outcome = RetryLater(f"the target raised {type(exc).__name__}: {exc}")
            took_us = (time.perf_counter_ns() - began) // 1000
            self.hooks.on_outcome(key, outcome)
        except Exception:
            # A hook failed: the delivery stays leased and comes back when the lease runs out.
            log.exception("delivery_settle_failed", delivery=delivery_id, target=list(key))
            self._owned.discard(delivery_id)
            self.wake.set()
            return
        finally:
            lane.busy -= 1
            del self._attempting[delivery_id]
        # The target has answered: its slot is free for the next delivery while this one's
        # outcome is being written (the delivery itself stays ours until then).
        if isinstance(outcome, Delivered):
            self._acks.append((delivery_id, key))
            if self.history:
                self._attempts.append(_attempt(delivery, started_us, took_us, outcome, "delivered"))
            if delivery.ordering_key is not None:
                self._acks_now = self._acks_ordered = True
            if self._acking is None:
                self._acking = asyncio.create_task(self._write_acks())
        else:
            self._spawn(self._settle(delivery, binding, outcome, started_us, took_us))
        if len(lane.waiting) <= lane.budget // 2 and not self._drained:
            # Lease the lane's next ones before it runs dry; not when the last lease took all
            # that was due: at a low rate that was a lease (a hop to the queue's writer) per
            # delivery that found nothing. New deliveries wake the worker when routed.
            self.wake.set()

    # -- outcomes ------------------------------------------------------------------------------

    async def _write_acks(self) -> None:
        """Write the acks waiting, together, until none is left."""
        try:
            while self._acks:
                if len(self._acks) < ACK_BATCH and not (self._acks_now or self._stopping):
                    await asyncio.sleep(ACK_LINGER_SECONDS)
                acks, self._acks, self._acks_now = self._acks, [], False
                attempts, self._attempts = self._attempts, []
                ordered, self._acks_ordered = self._acks_ordered, False
                written = False
                try:
                    await self.queue.ack_many([delivery_id for delivery_id, _ in acks], attempts)
                except DeliveryQueueError as exc:
                    # The queue failed us (out of reach for a moment): the leases run out and
                    # the deliveries come back by themselves. One line, no traceback.
                    log.warning("delivery_settle_failed", deliveries=len(acks), error=str(exc))
                except Exception:
                    log.exception("delivery_settle_failed", deliveries=len(acks))
                else:
                    written = True
                    for _, key in acks:
                        self.hooks.on_finished(key, "delivered")
                finally:
                    self._owned.difference_update(delivery_id for delivery_id, _ in acks)
                    # Room is free, and an ordered group may have its next ready; when the last
                    # lease took everything due and room was not what held it, only an ordered
                    # group's next could be there (and a burst looks whether it is done).
                    if ordered or not written or not self._drained or self._burst:
                        self.wake.set()
        finally:
            self._acking = None

    async def _settle(
        self,
        delivery: LeasedDelivery,
        binding: TargetBinding,
        outcome: RetryLater | GiveUp,
        started_us: int,
        took_us: int,
    ) -> None:
        """Write a failed attempt's outcome: a retry, a dead letter or a drop."""
        key = delivery.key
        history = self.history

        def attempt(ended: AttemptOutcome) -> Attempt | None:
            return _attempt(delivery, started_us, took_us, outcome, ended) if history else None

        try:
            decision = decide(
                outcome,
                attempts=delivery.attempts + 1,
                age_from=delivery.age_origin,
                policy=binding.retry_policy,
                dead_letter=binding.dead_letter,
                now=self.clock(),
                rng=self._rng,
            )
            if decision.verdict is Verdict.RETRY:
                assert decision.retry_at is not None
                await self.queue.retry(
                    delivery.id, decision.retry_at, decision.reason, attempt("retrying")
                )
                self.failure_log.failed(key, decision.reason)
            elif decision.verdict is Verdict.DEAD_LETTER:
                await self.queue.dead_letter(delivery.id, decision.reason, attempt("dead_lettered"))
                self.hooks.on_finished(key, "dead_lettered")
                self.failure_log.failed(key, decision.reason, gave_up="dead_lettered")
            else:
                await self.queue.ack(delivery.id, attempt("dropped"))
                self.hooks.on_finished(key, "dropped")
                self.failure_log.failed(key, decision.reason, gave_up="dropped")
        except DeliveryQueueError as exc:
            # As for acks: the lease runs out and the delivery comes back by itself.
            log.warning(
                "delivery_settle_failed", delivery=delivery.id, target=list(key), error=str(exc)
            )
        except Exception:
            log.exception("delivery_settle_failed", delivery=delivery.id, target=list(key))
        finally:
            self._owned.discard(delivery.id)
            self.wake.set()

    async def _orphaned(self, delivery: LeasedDelivery) -> None:
        """The rule or target is gone: dead-letter (redrivable once it is back), never drop.

        Unless this process only has not heard of it yet: with `refresh`, the bus's rules are
        read again first, and a delivery whose target is found then goes back to the queue to
        be leased and attempted as any other."""
        try:
            if self.refresh is not None:
                key = delivery.key
                await self._read_rules(key[0], key[1])
                if self.targets(*key) is not None:
                    await self.queue.release([delivery.id])
                    self.wake.set()
                    return
            reason = f"rule {delivery.rule!r} has no target {delivery.target_id!r} any more"
            await self.queue.dead_letter(delivery.id, reason)
            self.hooks.on_finished(delivery.key, "dead_lettered")
            self.failure_log.failed(delivery.key, reason, attempted=False, gave_up="dead_lettered")
        except Exception:
            log.exception("delivery_settle_failed", delivery=delivery.id)
        finally:
            self._owned.discard(delivery.id)
            self.wake.set()

    async def _read_rules(self, tenant: TenantName, bus: str) -> None:
        """`refresh(tenant, bus)`, in a reading that began after the latest lease returned.

        That lease returned after the delivery was routed, and so after its rule was saved: such
        a reading sees the rule if it exists. Deliveries of one lease (a deleted rule's backlog)
        share one reading instead of one each, which, serialised in the rule book, held the
        worker's room for minutes while live targets waited (bench e2e, issue 14).
        """
        assert self.refresh is not None
        wanted = self._leases_done
        key = (tenant, bus)
        reading = self._readings.get(key)
        if reading is None or reading[0] < wanted:
            reading = (wanted, asyncio.ensure_future(self.refresh(tenant, bus)))
            self._readings[key] = reading
        await asyncio.shield(reading[1])

    # -- stopping ------------------------------------------------------------------------------

    async def _drain(self) -> None:
        held = [d.id for lane in self._lanes.values() for d in lane.waiting]
        for lane in self._lanes.values():
            lane.waiting.clear()
        self._owned.difference_update(held)
        if held:
            with contextlib.suppress(Exception):  # if the queue is gone, the leases expire
                await self.queue.release(held)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._grace
        while live := {task for task in self._tasks if not task.done()}:
            # Attempts finish (settles of failures may start meanwhile) within the grace.
            _, pending = await asyncio.wait(live, timeout=max(0.0, deadline - loop.time()))
            if pending:
                unfinished = list(self._attempting)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                self._owned.difference_update(unfinished)
                if unfinished:
                    with contextlib.suppress(Exception):  # if the queue is gone, they expire
                        await self.queue.release(unfinished)
        while self._acking is not None:
            await self._acking


def _attempt(
    delivery: LeasedDelivery,
    started_us: int,
    took_us: int,
    outcome: Outcome,
    ended: AttemptOutcome,
) -> Attempt:
    # Positional: it runs per delivered attempt, and with keywords the call cost a third more.
    return Attempt(
        delivery.tenant, delivery.bus, delivery.rule, delivery.target_id, delivery.event_id,
        delivery.position, delivery.attempts + 1, started_us, took_us, ended, outcome.status,
        None if isinstance(outcome, Delivered) else outcome.reason, outcome.answer,
    )  # fmt: skip

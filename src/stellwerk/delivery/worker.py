"""The delivery worker: lease due deliveries, hand each to its target, settle the outcome.

How it is shaped and why: docs/delivery.md ("stellwerk.delivery.worker"). Failed attempts, dead
letters and drops also go to the log, one warning per target per interval (`FailureLog`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter, deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal, Protocol

import structlog

from stellwerk.clock import utc_now
from stellwerk.delivery.backoff import Verdict, decide
from stellwerk.delivery.failure_log import FailureLog
from stellwerk.delivery.model import Delivered, Outcome, RetryLater, Target
from stellwerk.rules import RetryPolicy
from stellwerk.seams import DeliveryQueueError, LeasedDelivery, TargetKey, WorkQueue

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

log = structlog.get_logger("stellwerk.delivery")

Finish = Literal["delivered", "dead_lettered", "dropped"]


@dataclass(frozen=True, slots=True)
class TargetBinding:
    """A target as the control plane configured it: where to deliver and how to fail."""

    target: Target
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy)
    dead_letter: bool = True
    concurrency: int = DEFAULT_CONCURRENCY


TargetResolver = Callable[[str, str, str, str], TargetBinding | None]
"""`targets(tenant, bus, rule, target_id)`: the binding, or None when it no longer exists."""


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


class DeliveryWorker:
    """Delivers what `queue` holds to the targets that `targets` resolves.

    Set `wake` (or call `notify`) after routing so new deliveries start at once. `clock` is the
    time used for leases, backoff and latency (a test can move it); `rng` drives the jitter.
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
    ) -> None:
        self.queue = queue
        self.targets = targets
        self.hooks: DeliveryHooks = hooks or NoHooks()
        self.clock = clock
        self.wake = wake or asyncio.Event()
        self.max_in_flight = max_in_flight
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self._rng = rng
        self.failure_log = failure_log or FailureLog()
        self._in_flight: dict[int, asyncio.Task[None]] = {}
        self._busy: Counter[TargetKey] = Counter()
        self._budgets: dict[TargetKey, int] = {}
        # Leased deliveries held back until a slot of their target frees (see `PREFETCH`).
        self._waiting: dict[TargetKey, deque[LeasedDelivery]] = {}
        self._held: set[int] = set()
        self._stopping = False
        self._grace = DEFAULT_STOP_GRACE_SECONDS
        self._running: asyncio.Event | None = None

    def notify(self) -> None:
        self.wake.set()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def run(self, *, burst: bool = False) -> None:
        """Deliver until `stop()`; with `burst`, until nothing is due or running."""
        self._stopping = False
        done = self._running = asyncio.Event()
        try:
            while not self._stopping:
                self.wake.clear()
                self.failure_log.flush()
                try:
                    started = await self._start_due()
                except Exception as exc:
                    # The queue is out of reach (a JetStream leader election, a broken
                    # connection): what is running goes on, and leasing is tried again shortly.
                    # Letting this end the loop would stop delivery for good.
                    log.warning("delivery_lease_failed", error=f"{type(exc).__name__}: {exc}")
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(LEASE_RETRY_SECONDS):
                            await self._stopped()
                    continue
                if started:
                    continue  # more may be due for targets with room left
                # A task that finished during the lease set `wake`: its slot was not offered.
                if burst and not self._in_flight and not self.wake.is_set():
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

    # -- the loop's steps ----------------------------------------------------------------------

    async def _start_due(self) -> int:
        room = self.max_in_flight - len(self._in_flight) - len(self._held)
        if room <= 0:
            return 0
        limits = {}
        for key, budget in self._budgets.items():
            # Up to a budget's worth more than the free slots, held back until a slot frees.
            free = (1 + PREFETCH) * budget - self._busy[key] - len(self._waiting.get(key, ()))
            if free < room:
                limits[key] = max(0, free)
        leased = await self.queue.lease(self.clock(), room, self.lease_seconds, limits)
        started = 0
        surplus: list[int] = []
        for delivery in leased:
            if delivery.id in self._in_flight or delivery.id in self._held:
                continue  # our own attempt outlived its lease; the new lease just extends it
            key = delivery.key
            binding = self.targets(*key)
            if binding is None:
                self._spawn(delivery, self._orphaned(delivery))
                started += 1
                continue
            budget = self._budgets[key] = binding.concurrency
            if self._busy[key] < budget:
                self._busy[key] += 1
                self._spawn(delivery, self._attempt(delivery, binding))
                started += 1
            elif len(self._waiting.get(key, ())) < PREFETCH * budget:
                self._waiting.setdefault(key, deque()).append(delivery)
                self._held.add(delivery.id)
            else:
                # Leased before its budget was known to us; give it back for a later round.
                surplus.append(delivery.id)
        if surplus:
            await self.queue.release(surplus)
        return started

    def _start_next(self, key: TargetKey) -> None:
        """A slot of the target is free: start the delivery held back for it, if there is one."""
        waiting = self._waiting.get(key)
        while waiting and self._busy[key] < self._budgets.get(key, 0) and not self._stopping:
            delivery = waiting.popleft()
            self._held.discard(delivery.id)
            binding = self.targets(*key)
            if binding is None:
                self._spawn(delivery, self._orphaned(delivery))
                continue
            self._busy[key] += 1
            self._spawn(delivery, self._attempt(delivery, binding))
        if not waiting:
            self._waiting.pop(key, None)

    def _spawn(self, delivery: LeasedDelivery, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work, name=f"delivery-{delivery.id}")
        self._in_flight[delivery.id] = task

    async def _attempt(self, delivery: LeasedDelivery, binding: TargetBinding) -> None:
        key = delivery.key
        holding = True
        try:
            first = delivery.attempts == 0
            if first:
                latency = (self.clock() - delivery.recorded_time).total_seconds()
                self.hooks.on_attempt(key, latency)
            else:
                self.hooks.on_attempt(key, None)
            try:
                outcome = await binding.target.deliver(delivery)
            except Exception as exc:  # the protocol says return an Outcome; a bug must not stick
                outcome = RetryLater(f"the target raised {type(exc).__name__}: {exc}")
            # The target has answered: its slot is free for the next delivery while this one's
            # outcome is being written (the delivery itself stays ours until then).
            holding = False
            self._busy[key] -= 1
            self._start_next(key)
            self.wake.set()
            self.hooks.on_outcome(key, outcome)
            await self._settle(delivery, binding, outcome)
        except DeliveryQueueError as exc:
            # The queue failed us (out of reach for a moment): the lease runs out and the
            # delivery comes back by itself. One line each, no traceback: in an outage there
            # is one per delivery in flight.
            log.warning(
                "delivery_settle_failed", delivery=delivery.id, target=list(key), error=str(exc)
            )
        except Exception:
            log.exception("delivery_settle_failed", delivery=delivery.id, target=list(key))
        finally:
            if holding:
                self._busy[key] -= 1
                self._start_next(key)
            self._done(delivery)

    async def _settle(
        self, delivery: LeasedDelivery, binding: TargetBinding, outcome: Outcome
    ) -> None:
        key = delivery.key
        if isinstance(outcome, Delivered):
            await self.queue.ack(delivery.id)
            self.hooks.on_finished(key, "delivered")
            return
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
            await self.queue.retry(delivery.id, decision.retry_at, decision.reason)
            self.failure_log.failed(key, decision.reason)
        elif decision.verdict is Verdict.DEAD_LETTER:
            await self.queue.dead_letter(delivery.id, decision.reason)
            self.hooks.on_finished(key, "dead_lettered")
            self.failure_log.failed(key, decision.reason, gave_up="dead_lettered")
        else:
            await self.queue.ack(delivery.id)
            self.hooks.on_finished(key, "dropped")
            self.failure_log.failed(key, decision.reason, gave_up="dropped")

    async def _orphaned(self, delivery: LeasedDelivery) -> None:
        """The rule or target is gone: dead-letter (redrivable once it is back), never drop."""
        try:
            reason = f"rule {delivery.rule!r} has no target {delivery.target_id!r} any more"
            await self.queue.dead_letter(delivery.id, reason)
            self.hooks.on_finished(delivery.key, "dead_lettered")
            self.failure_log.failed(delivery.key, reason, attempted=False, gave_up="dead_lettered")
        except Exception:
            log.exception("delivery_settle_failed", delivery=delivery.id)
        finally:
            self._done(delivery)

    def _done(self, delivery: LeasedDelivery) -> None:
        self._in_flight.pop(delivery.id, None)
        self.wake.set()  # a slot is free, and an ordered group may have its next one ready

    async def _drain(self) -> None:
        held = list(self._held)
        self._held.clear()
        self._waiting.clear()
        if held:
            with contextlib.suppress(Exception):  # if the queue is gone, the leases expire
                await self.queue.release(held)
        tasks = dict(self._in_flight)
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks.values(), timeout=self._grace)
        unfinished = [delivery_id for delivery_id, task in tasks.items() if task in pending]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if unfinished:
            with contextlib.suppress(Exception):  # if the queue is gone, the leases expire
                await self.queue.release(unfinished)

"""A tenant's cap on the invocation rate of each of its targets (`stellwerk tenants limits
--target-invocations-per-second`): deliveries beyond it wait, they are not dropped.

The resolver of the delivery worker is wrapped (`TenantThrottle.targets`): each attempt first
takes a token from the budget of its target (shared by every delivery worker with
`--redis-url`). A wait up to `hold` seconds is slept through, holding the target's slot; a
longer one becomes a throttled retry at the time the budget names (docs/quotas.md).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Final

from stellwerk.delivery.model import Outcome, RetryLater, Target
from stellwerk.delivery.worker import TargetBinding, TargetResolver
from stellwerk.ratelimit import Spent
from stellwerk.refs import TenantName
from stellwerk.seams import Delivery

# Longer waits than this go back to the queue as a retry: a lease must outlast the wait and
# the attempt after it (5 s is the default target timeout; leases are 60 s in scale-out).
HOLD_SECONDS: Final = 5.0
_MAX_WRAPPED: Final = 100_000

Budget = Callable[[TenantName, str], Awaitable[Spent | None]]
"""`budget(tenant, target)`: None when the target may be invoked now, else what was spent."""


class TenantThrottle:
    def __init__(self, budget: Budget, *, hold: float = HOLD_SECONDS) -> None:
        self._budget = budget
        self._hold = hold
        # The rule book's bindings, wrapped once each (a new binding after a reload is new).
        self._wrapped: dict[tuple[str, str, str, str], tuple[TargetBinding, TargetBinding]] = {}

    def targets(self, resolve: TargetResolver) -> TargetResolver:
        def throttled(tenant: TenantName, bus: str, rule: str, target: str) -> TargetBinding | None:
            binding = resolve(tenant, bus, rule, target)
            if binding is None:
                return None
            key = (tenant, bus, rule, target)
            held = self._wrapped.get(key)
            if held is not None and held[0] is binding:
                return held[1]
            wrapped = dataclasses.replace(
                binding, target=_ThrottledTarget(binding.target, self._budget, self._hold)
            )
            if len(self._wrapped) >= _MAX_WRAPPED:
                self._wrapped.clear()
            self._wrapped[key] = (binding, wrapped)
            return wrapped

        return throttled


class _ThrottledTarget:
    def __init__(self, target: Target, budget: Budget, hold: float) -> None:
        self._target = target
        self._budget = budget
        self._hold = hold

    async def deliver(self, delivery: Delivery) -> Outcome:
        name = f"{delivery.bus}/{delivery.rule}/{delivery.target_id}"
        until = time.monotonic() + self._hold
        while (spent := await self._budget(delivery.tenant, name)) is not None:
            if time.monotonic() + spent.retry_after > until:
                return RetryLater(
                    f"the tenant's target invocation rate ({spent.rate:g}/s) is reached",
                    retry_after=spent.retry_after,
                    throttled=True,
                )
            await asyncio.sleep(spent.retry_after)
        return await self._target.deliver(delivery)

    async def close(self) -> None:
        """Nothing of its own: the rule book closes the target it built."""

"""Token buckets per key (a tenant), in process: pure code with an injectable clock.

DESIGN.md puts rate limits behind the cache seam: in-process by default, Redis when several
gateways must share one budget (a later backend implements the same `acquire`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """`rate` tokens per second up to `burst`, one bucket per key; `rate <= 0` means unlimited."""

    def __init__(
        self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(rate, 1.0)
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def acquire(self, key: str, tokens: float = 1.0) -> float:
        """Take `tokens` from the bucket of `key`: 0.0 when granted, else seconds until they are."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(tokens=self.burst, updated=now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        if tokens > self.burst:
            # Never grantable: say how long a full bucket takes, the caller reports a limit breach.
            return self.burst / self.rate
        if bucket.tokens >= tokens:
            bucket.tokens -= tokens
            return 0.0
        return (tokens - bucket.tokens) / self.rate

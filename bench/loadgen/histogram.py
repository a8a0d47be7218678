"""Latency histogram with bounded relative error, cheap to record into and merge across processes.

Values are integer nanoseconds. Buckets are log-linear (as in HdrHistogram): below 256 ns each
value has its own bucket; above, every power of two is split into 128 equal buckets, so a bucket
is never wider than 1/128 (0.8 %) of the values it holds. A percentile is answered with the upper
edge of the bucket holding that rank (never below the true value, at most 0.8 % above it), and
exact minimum and maximum are kept beside the buckets.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from typing import Final

import msgspec

_SUB_BITS: Final = 7
_SUB: Final = 1 << _SUB_BITS  # 128 buckets per power of two
_LINEAR_LIMIT: Final = _SUB << 1  # values below 256 ns are exact


def bucket_of(value: int) -> int:
    """The bucket index of a non-negative value."""
    if value < _LINEAR_LIMIT:
        return value
    shift = value.bit_length() - _SUB_BITS - 1
    return _SUB * shift + (value >> shift)


def bucket_bounds(index: int) -> tuple[int, int]:
    """The smallest and largest value that fall into bucket `index`."""
    if index < _LINEAR_LIMIT:
        return index, index
    shift = index // _SUB - 1
    mantissa = index - _SUB * shift
    return mantissa << shift, ((mantissa + 1) << shift) - 1


def nearest_rank(values: Iterable[float], percent: float) -> float:
    """The exact percentile by the nearest-rank method: the smallest value with at least
    `percent` % of all values at or below it. The reference the histogram is tested against."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]


class LatencyHistogram(msgspec.Struct):
    """Counts of latencies (nanoseconds) per bucket, plus count, sum, minimum and maximum."""

    counts: dict[int, int] = msgspec.field(default_factory=dict)
    count: int = 0
    total: int = 0
    minimum: int = 0
    maximum: int = 0

    def record(self, nanoseconds: int) -> None:
        value = max(0, nanoseconds)
        index = bucket_of(value)
        counts = self.counts
        counts[index] = counts.get(index, 0) + 1
        if self.count == 0 or value < self.minimum:
            self.minimum = value
        if value > self.maximum:
            self.maximum = value
        self.count += 1
        self.total += value

    def merge(self, other: LatencyHistogram) -> None:
        if other.count == 0:
            return
        merged = Counter(self.counts)
        merged.update(other.counts)
        self.counts = dict(merged)
        self.minimum = other.minimum if self.count == 0 else min(self.minimum, other.minimum)
        self.maximum = max(self.maximum, other.maximum)
        self.count += other.count
        self.total += other.total

    def percentile(self, percent: float) -> int:
        """Nearest-rank percentile, to within one bucket (at most 0.8 % high); 0 if empty."""
        if not 0 <= percent <= 100:
            raise ValueError(f"percent must be within 0..100, not {percent}")
        if self.count == 0:
            return 0
        rank = max(1, math.ceil(percent / 100 * self.count))
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                return max(self.minimum, min(bucket_bounds(index)[1], self.maximum))
        return self.maximum

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

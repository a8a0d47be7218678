"""Metric families updated from the event loop only: plain numbers, exposed by a collector.

prometheus_client's metrics take a lock and check their state on every update (about 1.5 µs
each); a cached page answered from memory made six such updates, a third of its cost. These
families are for series that only the event loop's thread updates (every HTTP request's):
there a plain `+=` is exact, and each scrape reads them as prometheus_client's `Counter`,
`Histogram` and `Gauge` would expose them (same names, samples and `_created` series).
"""

from __future__ import annotations

import math
import os
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

__all__ = ["CounterSeries", "HistogramSeries", "LoopCounter", "LoopGauge", "LoopHistogram"]

_le: Callable[[float], str] = floatToGoString  # a bound as prometheus_client writes `le`

# As prometheus_client reads it: the operator's switch for every family's `_created` series.
_CREATED = os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES", "False").lower() not in (
    "true",
    "1",
    "t",
)


class CounterSeries:
    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("counters can only be incremented by non-negative amounts")
        self.value += amount


class HistogramSeries:
    __slots__ = ("bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # per bucket, not cumulative; the last is +Inf
        self.sum = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self.bounds, amount)] += 1  # `le`: a bound holds its value
        self.sum += amount


class _Family(Collector):
    """One family in the registry: `describe` names it (the registry refuses a second family
    of the name), `collect` reads it as it is at the scrape."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)

    def _check(self, values: tuple[str, ...]) -> None:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes the labels {self.labelnames}, not {values}")

    def describe(self) -> Iterator[Metric]:
        yield self._empty()

    def _empty(self) -> Metric:
        raise NotImplementedError


class LoopCounter(_Family):
    """A counter family; `labels(...)` gives a series to `inc()`."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry
    ) -> None:
        super().__init__(name, documentation, labelnames)
        self._series: dict[tuple[str, ...], CounterSeries] = {}
        registry.register(self)

    def labels(self, *values: str) -> CounterSeries:
        series = self._series.get(values)
        if series is None:
            self._check(values)
            series = self._series[values] = CounterSeries()
        return series

    def _empty(self) -> CounterMetricFamily:
        return CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        family = self._empty()
        for values, one in list(self._series.items()):
            family.add_metric(values, one.value, created=one.created if _CREATED else None)
        yield family


class LoopHistogram(_Family):
    """A histogram family with the given upper bounds (+Inf is added); `labels(...)` gives a
    series to `observe()`."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
        *,
        buckets: Sequence[float],
    ) -> None:
        super().__init__(name, documentation, labelnames)
        self._bounds = tuple(sorted(float(b) for b in buckets if b != math.inf))
        self._les = [_le(b) for b in (*self._bounds, math.inf)]
        self._series: dict[tuple[str, ...], HistogramSeries] = {}
        registry.register(self)

    def labels(self, *values: str) -> HistogramSeries:
        series = self._series.get(values)
        if series is None:
            self._check(values)
            series = self._series[values] = HistogramSeries(self._bounds)
        return series

    def _empty(self) -> HistogramMetricFamily:
        return HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        family = self._empty()
        for values, one in list(self._series.items()):
            cumulative, buckets = 0, []
            for le, count in zip(self._les, one.counts, strict=True):
                cumulative += count
                buckets.append((le, float(cumulative)))
            family.add_metric(values, buckets, one.sum)
            if _CREATED:
                labels = dict(zip(self.labelnames, values, strict=True))
                family.samples.append(Sample(f"{self.name}_created", labels, one.created, None))
        yield family


class LoopGauge(_Family):
    """A gauge without labels, to `inc()` and `dec()`."""

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry) -> None:
        super().__init__(name, documentation, ())
        self.value = 0.0
        registry.register(self)

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount

    def _empty(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(self.name, self.documentation, labels=())

    def collect(self) -> Iterator[Metric]:
        family = self._empty()
        family.add_metric((), self.value)
        yield family

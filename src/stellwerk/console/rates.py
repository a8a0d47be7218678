"""Rates from the server's own metrics: events accepted per bus, deliveries and their latency
per tenant, sampled every few seconds into a short ring that the pages and charts read.

A gateway counts what it accepted; the process that delivers counts its deliveries. In
`stellwerk serve` with two processes those are two processes: there the samples are taken from
the exposition that merges the pipeline process's metrics with the gateway's (`exposition`,
the same text `/metrics` answers), summed over the processes. Elsewhere (one process, or a
scale-out gateway) they are this process's own.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

SAMPLE_SECONDS: Final = 5.0
KEPT: Final = 72  # six minutes of samples
RATE_WINDOW: Final = 12  # samples a "now" rate spans (a minute)

_ACCEPTED: Final = "stellwerk_ingest_events_accepted"
_INVOCATIONS: Final = "stellwerk_invocations"
_LATENCY: Final = "stellwerk_ingestion_to_invocation_seconds"


@dataclass(slots=True)
class Sample:
    at: float
    accepted: dict[tuple[str, str], float] = field(default_factory=dict)  # (tenant, bus)
    delivered: dict[str, float] = field(default_factory=dict)  # tenant
    latency_sum: dict[str, float] = field(default_factory=dict)
    latency_count: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Series:
    """A tenant's rates over the kept window: per sample interval, oldest first."""

    ingest: list[float]
    delivery: list[float]
    latency_ms: list[float]
    # What `latency_ms` measures: from the metrics, ingest to first attempt; drawn from the
    # delivery history (`stellwerk.console.delivered`), how long delivered attempts took.
    latency_label: str = "Ingest to first attempt"
    complete: bool = True  # False: the history drawing stopped at its read budget


log = structlog.get_logger("stellwerk.console")


def take_sample(families: Iterable[Metric], at: float) -> Sample:
    sample = Sample(at)
    for family in families:
        if family.name not in (_ACCEPTED, _INVOCATIONS, _LATENCY):
            continue
        for s in family.samples:
            tenant = s.labels.get("tenant", "")
            if s.name == _ACCEPTED + "_total":
                key = (tenant, s.labels.get("bus", ""))
                sample.accepted[key] = sample.accepted.get(key, 0.0) + s.value
            elif s.name == _INVOCATIONS + "_total":
                sample.delivered[tenant] = sample.delivered.get(tenant, 0.0) + s.value
            elif s.name == _LATENCY + "_sum":
                sample.latency_sum[tenant] = sample.latency_sum.get(tenant, 0.0) + s.value
            elif s.name == _LATENCY + "_count":
                sample.latency_count[tenant] = sample.latency_count.get(tenant, 0.0) + s.value
    return sample


class Rates:
    """The ring of samples; `run` fills it (a gateway's duty) every `every` seconds."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        every: float = SAMPLE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = registry
        self.every = every
        self._clock = clock
        self._samples: deque[Sample] = deque(maxlen=KEPT)
        # The merged exposition of the processes of a data directory, once the console has
        # learnt of it (`stellwerk.console.web`); None: this process's registry alone.
        self.exposition: Callable[[], Awaitable[str]] | None = None

    def sample(self) -> None:
        self._samples.append(take_sample(self._registry.collect(), self._clock()))

    async def sample_all(self) -> None:
        """A sample of every process's counters when the merged exposition is known."""
        if self.exposition is None:
            self.sample()
            return
        try:
            text = await self.exposition()
            families = list(text_string_to_metric_families(text))
        except Exception as exc:  # a sample less is no reason to stop sampling
            log.warning("console could not read the merged metrics", error=str(exc))
            self.sample()
            return
        self._samples.append(take_sample(families, self._clock()))

    async def run(self) -> None:
        while True:
            await self.sample_all()
            await asyncio.sleep(self.every)

    def bus_rate(self, tenant: str, bus: str) -> float | None:
        """Events per second accepted on the bus over the last minute (None: too few samples)."""
        window = list(self._samples)[-RATE_WINDOW:]
        if len(window) < 2 or window[-1].at <= window[0].at:
            return None
        key = (tenant, bus)
        grown = window[-1].accepted.get(key, 0.0) - window[0].accepted.get(key, 0.0)
        return max(0.0, grown) / (window[-1].at - window[0].at)

    def series(self, tenant: str) -> Series:
        ingest: list[float] = []
        delivery: list[float] = []
        latency: list[float] = []
        for before, after in _pairs(self._samples):
            span = after.at - before.at
            if span <= 0:
                continue
            accepted = sum(v for (t, _), v in after.accepted.items() if t == tenant) - sum(
                v for (t, _), v in before.accepted.items() if t == tenant
            )
            ingest.append(max(0.0, accepted) / span)
            done = after.delivered.get(tenant, 0.0) - before.delivered.get(tenant, 0.0)
            delivery.append(max(0.0, done) / span)
            count = after.latency_count.get(tenant, 0.0) - before.latency_count.get(tenant, 0.0)
            total = after.latency_sum.get(tenant, 0.0) - before.latency_sum.get(tenant, 0.0)
            # No delivery in an interval says nothing of latency: the last one stands.
            latency.append(1000 * total / count if count > 0 else (latency[-1] if latency else 0.0))
        return Series(ingest, delivery, latency)


def _pairs(samples: Iterable[Sample]) -> Iterable[tuple[Sample, Sample]]:
    it = iter(samples)
    before = next(it, None)
    for after in it:
        assert before is not None
        yield before, after
        before = after

"""The primary's own health signals, as its `/metrics` shows them, judged against an endpoint's
policy: the share of the tenant's ingest requests to the endpoint's buses that it failed (on
every ingest route), and the p99 of the time from an event's recording to its first delivery
attempt on those buses.

Both are counters, so a signal is the difference between two readings `window_seconds` apart.
Too few requests or deliveries in the window say nothing (`MIN_SAMPLES`): a quiet primary is
judged by its probe alone.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Final

from prometheus_client.parser import text_string_to_metric_families

MIN_SAMPLES: Final = 20
# Counted where every ingest route passes (`Ingest._take`): CloudEvents, Segment, Snowplow and
# PutEvents, per tenant and bus.
REQUESTS: Final = "stellwerk_ingest_requests_total"
ERRORS: Final = "stellwerk_ingest_request_errors_total"
LATENCY_BUCKET: Final = "stellwerk_ingestion_to_invocation_seconds_bucket"
SAMPLES: Final = (REQUESTS, ERRORS, LATENCY_BUCKET)  # asked for alone (`/metrics?name[]=`)
_SERIES: Final = (REQUESTS + "{", ERRORS + "{", LATENCY_BUCKET + "{")


@dataclass(frozen=True)
class Reading:
    """The counters of one `/metrics` reading that the signals are made of."""

    requests: float = 0.0
    errors: float = 0.0  # of those, answered 5xx
    buckets: dict[float, float] = field(default_factory=dict)  # le -> cumulative count


def reading(text: str, tenant: str, buses: Collection[str]) -> Reading:
    """The counters of a `/metrics` text for the tenant's `buses`: ingest requests and those
    failed, and the latency histogram's buckets. `ValueError` if it is no exposition.

    Only the samples of those three series and the tenant are parsed: the secondary reads the
    primary's whole `/metrics` each second, and parsing all of it was the largest part of an
    idle secondary's own work."""
    requests = errors = 0.0
    buckets: dict[float, float] = {}
    label = f'tenant="{tenant}"'
    kept = "\n".join(
        line for line in text.splitlines() if line.startswith(_SERIES) and label in line
    )
    if not kept and not text.startswith("# "):
        raise ValueError("not a Prometheus exposition")
    for family in text_string_to_metric_families(kept):
        for sample in family.samples:
            labels = sample.labels
            if labels.get("tenant") != tenant or labels.get("bus") not in buses:
                continue
            if sample.name == REQUESTS:
                requests += sample.value
            elif sample.name == ERRORS:
                errors += sample.value
            elif sample.name == LATENCY_BUCKET:
                le = float(labels["le"])
                buckets[le] = buckets.get(le, 0.0) + sample.value
    return Reading(requests, errors, buckets)


@dataclass(frozen=True)
class Signals:
    """What a window of readings says (None: too little happened to say)."""

    error_rate: float | None
    p99_ms: float | None

    def problem(self, error_rate: float, latency_p99_ms: float) -> str | None:
        """Why the signals fail the policy, or None."""
        if self.error_rate is not None and self.error_rate > error_rate:
            return f"ingest error rate {self.error_rate:.2f} (over {error_rate:g})"
        if self.p99_ms is not None and self.p99_ms > latency_p99_ms:
            return f"p99 ingestion to invocation {self.p99_ms:.0f} ms (over {latency_p99_ms:g})"
        return None


def signals(first: Reading, last: Reading) -> Signals:
    requests = last.requests - first.requests
    error_rate = None
    if requests >= MIN_SAMPLES:
        error_rate = max(0.0, last.errors - first.errors) / requests
    delta = {le: last.buckets.get(le, 0.0) - first.buckets.get(le, 0.0) for le in last.buckets}
    return Signals(error_rate, _p99_ms(delta))


def _p99_ms(buckets: dict[float, float]) -> float | None:
    """The 99th percentile of a histogram's cumulative buckets, interpolated within its bucket
    as Prometheus's `histogram_quantile` does."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] < MIN_SAMPLES:
        return None
    rank = 0.99 * buckets[bounds[-1]]
    below, lower = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):
                return lower * 1000  # beyond the last finite bound: at least that
            width = count - below
            share = (rank - below) / width if width > 0 else 1.0
            return (lower + (le - lower) * share) * 1000
        below, lower = count, le
    return None

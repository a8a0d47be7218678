"""The primary's health signals read from a real Prometheus exposition (pure: no servers)."""

from __future__ import annotations

from prometheus_client import Histogram, generate_latest

from stellwerk.ingest.metrics import IngestMetrics, bus_metrics
from stellwerk.ops import Metrics
from stellwerk.sites.signals import Reading, reading, signals

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class Primary:
    """The metrics as a Stellwerk process exposes them: ingest's own (counted where every
    ingest route passes), and the latency histogram as delivery's metrics label it."""

    def __init__(self) -> None:
        metrics = Metrics(process=False)
        self.registry = metrics.registry
        self.ingest = IngestMetrics(metrics)
        self.latency = Histogram(
            "stellwerk_ingestion_to_invocation_seconds",
            "From recording to the first attempt",
            ["tenant", "bus", "rule", "target"],
            buckets=BUCKETS,
            registry=self.registry,
        )

    def reading(self) -> Reading:
        return reading(generate_latest(self.registry).decode(), "acme", {"orders"})

    def answered(self, status: str, times: int, tenant: str = "acme", bus: str = "orders") -> None:
        counters = bus_metrics(self.ingest, tenant, bus)
        counters.requests.inc(times)
        if status.startswith("5"):
            counters.request_errors.inc(times)

    def delivered(
        self, seconds: float, times: int, tenant: str = "acme", bus: str = "orders"
    ) -> None:
        for _ in range(times):
            self.latency.labels(tenant, bus, "r", "t").observe(seconds)


def test_the_share_of_ingest_requests_answered_5xx_fails_the_policy_over_its_bound() -> None:
    primary = Primary()
    primary.answered("202", 10)
    first = primary.reading()
    primary.answered("202", 70)
    primary.answered("503", 30)
    # Another tenant's failures, and another bus's, are not the endpoint's.
    primary.answered("503", 500, tenant="other")
    primary.answered("503", 500, bus="elsewhere")
    seen = signals(first, primary.reading())
    assert seen.error_rate == 0.3
    assert seen.problem(error_rate=0.5, latency_p99_ms=2000) is None
    problem = seen.problem(error_rate=0.2, latency_p99_ms=2000)
    assert problem is not None
    assert problem.startswith("ingest error rate 0.30")


def test_the_p99_of_ingestion_to_invocation_counts_the_endpoints_buses_of_the_tenant() -> None:
    primary = Primary()
    first = primary.reading()
    primary.delivered(0.02, 90)
    primary.delivered(3.0, 10)  # the slowest tenth: p99 lies in the (2.5, 5] bucket
    primary.delivered(100.0, 50, tenant="other")
    primary.delivered(100.0, 50, bus="elsewhere")
    seen = signals(first, primary.reading())
    assert seen.p99_ms is not None
    assert 2500 < seen.p99_ms <= 5000
    problem = seen.problem(error_rate=0.5, latency_p99_ms=2000)
    assert problem is not None
    assert problem.startswith("p99 ingestion to invocation")
    assert seen.problem(error_rate=0.5, latency_p99_ms=10_000) is None


def test_a_quiet_window_says_nothing() -> None:
    primary = Primary()
    first = primary.reading()
    primary.answered("503", 5)
    primary.delivered(60.0, 5)
    seen = signals(first, primary.reading())
    assert (seen.error_rate, seen.p99_ms) == (None, None)
    assert seen.problem(error_rate=0.0, latency_p99_ms=1) is None

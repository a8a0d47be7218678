"""Ingest metrics: what came in, what was kept, what was refused and why, and the log's pace."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import Histogram

from stellwerk.ops import CounterSeries, LoopCounter, Metrics

_BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
_COMMIT_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class IngestMetrics:
    """The per-bus counters are updated on the event loop only (every ingest route runs
    there): plain numbers (`LoopCounter`), not prometheus_client's locked ones, which cost
    about 1.5 µs each and a single-event request made three. The writer thread's commit
    histograms stay prometheus_client's."""

    def __init__(self, metrics: Metrics) -> None:
        registry = metrics.registry
        self.accepted = LoopCounter(
            "stellwerk_ingest_events_accepted_total",
            "Events stored durably (duplicates not included).",
            ["tenant", "bus"],
            registry,
        )
        self.duplicates = LoopCounter(
            "stellwerk_ingest_events_duplicate_total",
            "Events answered as accepted without storing: same id and source within the window.",
            ["tenant", "bus"],
            registry,
        )
        self.rejected = LoopCounter(
            "stellwerk_ingest_events_rejected_total",
            "Events refused, by reason (the error code of the answer).",
            ["tenant", "bus", "reason"],
            registry,
        )
        self.failed_validation = LoopCounter(
            "stellwerk_ingest_events_failed_validation_total",
            "Events whose data broke their type's schema, by the bus's mode (warn or enforce).",
            ["tenant", "bus", "mode"],
            registry,
        )
        self.bytes_in = LoopCounter(
            "stellwerk_ingest_bytes_total",
            "Request body bytes received by the ingest endpoint.",
            ["tenant", "bus"],
            registry,
        )
        # Every ingest route's requests pass `Ingest._take` (CloudEvents, Segment, Snowplow,
        # PutEvents): counted there per tenant and bus, with those the site failed (its 5xx,
        # not the client's 4xx). A peer site's health policy reads these (sites.signals).
        self.requests = LoopCounter(
            "stellwerk_ingest_requests_total",
            "Ingest requests that reached a bus, on every ingest route.",
            ["tenant", "bus"],
            registry,
        )
        self.request_errors = LoopCounter(
            "stellwerk_ingest_request_errors_total",
            "Of those, the ones this site failed (answered 5xx: a store out of reach, a bug).",
            ["tenant", "bus"],
            registry,
        )
        self.append_batch = Histogram(
            "stellwerk_log_append_batch_events",
            "Events committed together by one group commit of the event log.",
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        self.append_seconds = Histogram(
            "stellwerk_log_append_commit_seconds",
            "Time one group commit of the event log took.",
            buckets=_COMMIT_BUCKETS,
            registry=registry,
        )
        self.buses: dict[tuple[str, str], BusMetrics] = {}

    def on_commit(self, events: int, seconds: float) -> None:
        """Called by the event log (in its writer thread) after each group commit."""
        self.append_batch.observe(events)
        self.append_seconds.observe(seconds)


@dataclass(slots=True)
class BusMetrics:
    """The counters of one tenant's bus, looked up once (`labels()` validates and locks)."""

    metrics: IngestMetrics
    tenant: str
    bus: str
    accepted: CounterSeries
    duplicates: CounterSeries
    bytes_in: CounterSeries
    requests: CounterSeries
    request_errors: CounterSeries
    _rejected: dict[str, CounterSeries] = field(default_factory=dict)

    def rejected(self, reason: str) -> CounterSeries:
        counter = self._rejected.get(reason)
        if counter is None:
            counter = self._rejected[reason] = self.metrics.rejected.labels(
                self.tenant, self.bus, reason
            )
        return counter


def bus_metrics(metrics: IngestMetrics, tenant: str, bus: str) -> BusMetrics:
    """The counters of a bus, cached on `metrics`; bounded like the label sets themselves."""
    found = metrics.buses.get((tenant, bus))
    if found is None:
        found = metrics.buses[(tenant, bus)] = BusMetrics(
            metrics,
            tenant,
            bus,
            metrics.accepted.labels(tenant, bus),
            metrics.duplicates.labels(tenant, bus),
            metrics.bytes_in.labels(tenant, bus),
            metrics.requests.labels(tenant, bus),
            metrics.request_errors.labels(tenant, bus),
        )
    return found

"""Routing and delivery metrics, with the meanings EventBridge users know.

- `stellwerk_matched_events_total{tenant,bus}`: events that matched at least one rule.
- `stellwerk_triggered_rules_total{tenant,bus,rule}`: times a rule matched an event.
- `stellwerk_invocations_total{...,target}`: deliveries finished (delivered or failed for good);
  retries are not counted again.
- `stellwerk_invocation_attempts_total{...}`: every attempt, retries included.
- `stellwerk_failed_invocations_total{...}`: deliveries that failed for good (dead-lettered or
  dropped); `stellwerk_dead_lettered_total{...}` the dead-lettered part of them.
- `stellwerk_throttled_total{...}`: attempts refused by a rate limit (the target's or a 429).
- `stellwerk_ingestion_to_invocation_seconds{...}`: recorded time to the start of the first attempt.
- `stellwerk_delivery_queue_depth{...,state}` and `stellwerk_delivery_oldest_pending_seconds{...}`,
  refreshed every few seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from stellwerk.delivery.model import Outcome, RetryLater
from stellwerk.delivery.worker import Finish
from stellwerk.seams import QueueDepth, TargetKey

_TARGET = ["tenant", "bus", "rule", "target"]
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class _TargetSeries(NamedTuple):
    """The series every delivery of a target counts in, labelled once."""

    attempts: Counter
    ingestion_to_invocation: Histogram
    invocations: Counter


class DeliveryMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        # The process's registry (`ops.Metrics.registry`): delivery does not import `ops`,
        # whose tracing wraps delivery's targets.
        self.matched_events = Counter(
            "stellwerk_matched_events_total",
            "Events that matched at least one rule.",
            ["tenant", "bus"],
            registry=registry,
        )
        self.triggered_rules = Counter(
            "stellwerk_triggered_rules_total",
            "Times a rule matched an event.",
            ["tenant", "bus", "rule"],
            registry=registry,
        )
        self.invocations = Counter(
            "stellwerk_invocations_total",
            "Deliveries finished, delivered or failed for good (retries not counted again).",
            _TARGET,
            registry=registry,
        )
        self.attempts = Counter(
            "stellwerk_invocation_attempts_total",
            "Delivery attempts, retries included.",
            _TARGET,
            registry=registry,
        )
        self.failed = Counter(
            "stellwerk_failed_invocations_total",
            "Deliveries that failed for good (dead-lettered or dropped).",
            _TARGET,
            registry=registry,
        )
        self.dead_lettered = Counter(
            "stellwerk_dead_lettered_total",
            "Deliveries moved to the dead-letter queue.",
            _TARGET,
            registry=registry,
        )
        self.throttled = Counter(
            "stellwerk_throttled_total",
            "Attempts refused by a rate limit (the target's own or the receiver's 429).",
            _TARGET,
            registry=registry,
        )
        self.ingestion_to_invocation = Histogram(
            "stellwerk_ingestion_to_invocation_seconds",
            "From an event's recorded time to the start of its first delivery attempt.",
            _TARGET,
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.depth = Gauge(
            "stellwerk_delivery_queue_depth",
            "Deliveries per target by state (pending, in_flight, dead).",
            [*_TARGET, "state"],
            registry=registry,
        )
        self.oldest_pending = Gauge(
            "stellwerk_delivery_oldest_pending_seconds",
            "Age of the oldest unfinished delivery of a target.",
            _TARGET,
            registry=registry,
        )
        # Labelled children, looked up once: `labels()` hashes and locks on every call, and
        # an event or a delivery would call it several times. They live as long as the
        # registry's own, so keeping them costs nothing more.
        self._targets: dict[TargetKey, _TargetSeries] = {}
        self._matched: dict[tuple[str, str], Counter] = {}
        self._triggered: dict[tuple[str, str, str], Counter] = {}

    # Router hooks ---------------------------------------------------------------------------

    def on_routed(self, tenant: str, bus: str, events: int, deliveries: int) -> None:
        pass

    def on_matched(self, tenant: str, bus: str, rules: Sequence[str]) -> None:
        if rules:
            matched = self._matched.get((tenant, bus))
            if matched is None:
                matched = self._matched[tenant, bus] = self.matched_events.labels(tenant, bus)
            matched.inc()
            for rule in rules:
                triggered = self._triggered.get((tenant, bus, rule))
                if triggered is None:
                    triggered = self._triggered[tenant, bus, rule] = self.triggered_rules.labels(
                        tenant, bus, rule
                    )
                triggered.inc()

    # Worker hooks ---------------------------------------------------------------------------

    def on_attempt(self, key: TargetKey, ingestion_seconds: float | None) -> None:
        series = self._series(key)
        series.attempts.inc()
        if ingestion_seconds is not None:
            series.ingestion_to_invocation.observe(max(0.0, ingestion_seconds))

    def on_outcome(self, key: TargetKey, outcome: Outcome) -> None:
        if isinstance(outcome, RetryLater) and outcome.throttled:
            self.throttled.labels(*key).inc()

    def on_finished(self, key: TargetKey, finish: Finish) -> None:
        self._series(key).invocations.inc()
        if finish != "delivered":
            self.failed.labels(*key).inc()
        if finish == "dead_lettered":
            self.dead_lettered.labels(*key).inc()

    def _series(self, key: TargetKey) -> _TargetSeries:
        series = self._targets.get(key)
        if series is None:
            series = self._targets[key] = _TargetSeries(
                self.attempts.labels(*key),
                self.ingestion_to_invocation.labels(*key),
                self.invocations.labels(*key),
            )
        return series

    def set_depth(self, depths: Sequence[QueueDepth]) -> None:
        self.depth.clear()
        self.oldest_pending.clear()
        for depth in depths:
            labels = tuple(depth.key)
            self.depth.labels(*labels, "pending").set(depth.pending)
            self.depth.labels(*labels, "in_flight").set(depth.in_flight)
            self.depth.labels(*labels, "dead").set(depth.dead)
            if depth.oldest_pending_seconds is not None:
                self.oldest_pending.labels(*labels).set(depth.oldest_pending_seconds)

"""The collector's metrics: what became of each source's messages."""

from __future__ import annotations

from prometheus_client import Counter

from stellwerk.ops import Metrics


class TrackingMetrics:
    def __init__(self, metrics: Metrics) -> None:
        self.messages = Counter(
            "stellwerk_tracking_messages_total",
            "Tracker messages by source and outcome: accepted (durable; duplicates included), "
            "dropped (kept out by consent), or the code they were refused with.",
            ["tenant", "source", "outcome"],
            registry=metrics.registry,
        )

    def count(self, tenant: str, source: str, outcome: str, amount: int = 1) -> None:
        if amount:
            self.messages.labels(tenant, source, outcome).inc(amount)

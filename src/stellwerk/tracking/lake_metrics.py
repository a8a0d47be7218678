"""The lake's metrics: rows taken (and re-deliveries recognised), files written or failed, and
what waits in the spool."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from stellwerk.ops import Metrics


class LakeMetrics:
    def __init__(self, metrics: Metrics) -> None:
        self.rows = Counter(
            "stellwerk_lake_rows_total",
            "Deliveries to lake targets: staged (a new row), or duplicate (a re-delivery of a "
            "row the spool already had, acknowledged without a second one).",
            ["tenant", "outcome"],
            registry=metrics.registry,
        )
        self.files = Counter(
            "stellwerk_lake_files_total",
            "Lake files by outcome: written (in place), or failed (tried again later).",
            ["tenant", "outcome"],
            registry=metrics.registry,
        )
        self.waiting = Gauge(
            "stellwerk_lake_rows_waiting",
            "Rows acknowledged and staged in this process's spool, not yet in a file.",
            registry=metrics.registry,
        )

    def row(self, tenant: str, fresh: bool) -> None:
        self.rows.labels(tenant, "staged" if fresh else "duplicate").inc()

    def file(self, partition: str, written: bool) -> None:
        tenant = partition.partition("/")[0].removeprefix("tenant=")
        self.files.labels(tenant, "written" if written else "failed").inc()

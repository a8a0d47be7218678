"""Operations: metrics, logging, probes, traces and error tracking of a Stellwerk process."""

from stellwerk.ops.lifecycle import Lifecycle, NotReadyError, Phase, cancelled_meanwhile
from stellwerk.ops.logging import configure_logging
from stellwerk.ops.loop_metrics import (
    CounterSeries,
    HistogramSeries,
    LoopCounter,
    LoopGauge,
    LoopHistogram,
)
from stellwerk.ops.metrics import Metrics
from stellwerk.ops.peers import PeerMetrics, merge_expositions
from stellwerk.ops.sentry import start_error_tracking
from stellwerk.ops.tracing import Tracing

__all__ = [
    "CounterSeries",
    "HistogramSeries",
    "Lifecycle",
    "LoopCounter",
    "LoopGauge",
    "LoopHistogram",
    "Metrics",
    "NotReadyError",
    "PeerMetrics",
    "Phase",
    "Tracing",
    "cancelled_meanwhile",
    "configure_logging",
    "merge_expositions",
    "start_error_tracking",
]

"""Ingest adapters: how events arrive over HTTP and become CloudEvents for the log."""

from stellwerk.ingest.binding import (
    BATCH_CONTENT_TYPE,
    JSON_CONTENT_TYPE,
    STRUCTURED_CONTENT_TYPE,
    BindingError,
    BindingLimits,
    DecodedEvent,
    EventFailure,
    decode_request,
)
from stellwerk.ingest.metrics import BusMetrics, IngestMetrics, bus_metrics

__all__ = [
    "BATCH_CONTENT_TYPE",
    "JSON_CONTENT_TYPE",
    "STRUCTURED_CONTENT_TYPE",
    "BindingError",
    "BindingLimits",
    "BusMetrics",
    "DecodedEvent",
    "EventFailure",
    "IngestMetrics",
    "bus_metrics",
    "decode_request",
]

"""Pure ASGI middleware: the gate of protected routes, the body limit, request metrics, the
ingest route answered ahead of Starlette with the same checks, and capabilities' fast paths."""

from stellwerk.api.middleware.fast import (
    Answer,
    Answerer,
    ClientGone,
    Deferred,
    FastPaths,
    whole_body,
)
from stellwerk.api.middleware.gate import GateMiddleware, principal_of
from stellwerk.api.middleware.ingest import IngestFastPath
from stellwerk.api.middleware.limits import BodyLimitMiddleware, check_declared, too_large
from stellwerk.api.middleware.metrics import RequestMetricsMiddleware

__all__ = [
    "Answer",
    "Answerer",
    "BodyLimitMiddleware",
    "ClientGone",
    "Deferred",
    "FastPaths",
    "GateMiddleware",
    "IngestFastPath",
    "RequestMetricsMiddleware",
    "check_declared",
    "principal_of",
    "too_large",
    "whole_body",
]

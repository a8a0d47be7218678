"""Probes and metrics: `/livez`, `/readyz`, `/startupz`, `/metrics` (no key needed)."""

from __future__ import annotations

import asyncio

import msgspec
import structlog
from starlette.requests import Request
from starlette.responses import Response

from stellwerk.api.bodies import json_response
from stellwerk.api.context import lifecycle_of
from stellwerk.api.endpoints import Endpoint
from stellwerk.ops import Phase
from stellwerk.service import Unavailable

log = structlog.get_logger("stellwerk.health")

PING_TIMEOUT_SECONDS = 2.0


class Health(msgspec.Struct, omit_defaults=True):
    status: str
    reason: str | None = None


async def livez(_request: Request) -> Response:
    return json_response(Health(status="ok"))


async def startupz(request: Request) -> Response:
    lifecycle = lifecycle_of(request)
    if lifecycle.started:
        return json_response(Health(status="started"))
    return json_response(Health(status="starting", reason=lifecycle.last_start_error), 503)


async def readyz(request: Request) -> Response:
    lifecycle = lifecycle_of(request)
    if lifecycle.phase is not Phase.READY:
        return json_response(Health(status=str(lifecycle.phase)), 503)
    try:
        async with asyncio.timeout(PING_TIMEOUT_SECONDS):
            await lifecycle.services.platform.readiness.control_plane()
    except Exception as exc:
        log.warning("control plane unreachable", error=str(exc))
        return json_response(Health(status="unavailable", reason="control plane unreachable"), 503)
    try:
        async with asyncio.timeout(PING_TIMEOUT_SECONDS):
            await lifecycle.services.platform.readiness.event_log()
    except Exception as exc:
        log.warning("event log unavailable", error=str(exc))
        reason = "event log unavailable"
        if isinstance(exc, Unavailable):
            reason = f"{reason}: {exc.message}"
        return json_response(Health(status="unavailable", reason=reason), 503)
    return json_response(Health(status="ready"))


async def metrics(request: Request) -> Response:
    # `?name[]=...` (as prometheus_client's own handler): only those samples, for a reader
    # that wants a few series often (a peer site's health signals) without the whole render.
    names = request.query_params.getlist("name[]")
    peers = getattr(request.app.state, "peer_metrics", None)
    if peers is not None:
        # Embedded mode's gateway: the pipeline process's metrics too (docs/operations.md).
        body, content_type = await peers.render(names)
    else:
        body, content_type = request.app.state.metrics.render(request.headers.get("accept"), names)
    return Response(body, media_type=content_type)


ENDPOINTS = [
    Endpoint(
        "get",
        "/livez",
        livez,
        "Liveness: the process answers",
        "operations",
        None,
        responses={200: Health},
    ),
    Endpoint(
        "get",
        "/readyz",
        readyz,
        "Readiness: started, not draining, and the stores answer",
        "operations",
        None,
        responses={200: Health, 503: Health},
    ),
    Endpoint(
        "get",
        "/startupz",
        startupz,
        "Startup: migrations and recovery are done",
        "operations",
        None,
        responses={200: Health, 503: Health},
    ),
    Endpoint(
        "get",
        "/metrics",
        metrics,
        "Prometheus metrics (text exposition format)",
        "operations",
        None,
        responses={200: None},
    ),
]

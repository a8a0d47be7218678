"""A live view of a bus: `GET /v1/buses/{bus}/events/stream` as server-sent events.

Each event recorded after the request started (or after `?after=<position>`, to resume where a
dropped connection stopped, like SSE's `Last-Event-ID`) that matches the optional `?pattern=` is
sent as `event: cloudevent`, `id: <position>`, `data: <the event JSON>`. A comment line every
15 s keeps proxies from closing an idle stream. This is for people debugging rules, not a
delivery mechanism: a slow reader is disconnected rather than buffered without bound.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from stellwerk.api.context import services_of
from stellwerk.api.endpoints import Endpoint
from stellwerk.api.errors import ApiError, ErrorBody, not_found
from stellwerk.api.middleware.auth import principal_of
from stellwerk.api.routes.buses import bus_name
from stellwerk.auth import Scope
from stellwerk.patterns import CompiledPattern, InvalidPatternError, compile_pattern
from stellwerk.services import Services

KEEPALIVE_SECONDS = 15.0
PAGE = 200


async def tail(request: Request) -> Response:
    name = bus_name(request)
    services = services_of(request)
    principal = principal_of(request.scope)
    bus = await services.buses.bus(principal.tenant_id, name)
    if bus is None:
        raise not_found(f"bus {name!r}")
    pattern: CompiledPattern | None = None
    if "pattern" in request.query_params:
        try:
            pattern = compile_pattern(request.query_params["pattern"])
        except InvalidPatternError as exc:
            raise ApiError(400, "InvalidEventPatternException", str(exc), field="pattern") from None
    after_text = request.query_params.get("after") or request.headers.get("last-event-id")
    if after_text is not None:
        if not after_text.isdigit():
            raise ApiError(400, "InvalidRequest", "after must be a log position", field="after")
        after = int(after_text)
    else:
        after = await services.event_log.last_position(principal.tenant, name)
    return StreamingResponse(
        _stream(services, principal.tenant, name, after, pattern),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _stream(
    services: Services, tenant: str, bus: str, after: int, pattern: CompiledPattern | None
) -> AsyncIterator[bytes]:
    yield b": tailing " + bus.encode() + b"\n\n"
    while True:
        events = await services.event_log.read(tenant, bus, after=after, limit=PAGE)
        for event in events:
            after = event.position
            if pattern is None or pattern.matches(event.body):
                yield b"event: cloudevent\nid: %d\ndata: %s\n\n" % (event.position, event.body)
        if len(events) == PAGE:
            continue
        if not await services.log_watch.wait(tenant, bus, KEEPALIVE_SECONDS):
            yield b": keepalive\n\n"


ENDPOINTS = [
    Endpoint(
        "get",
        "/v1/buses/{bus}/events/stream",
        tail,
        "Live view of a bus's events as server-sent events (?pattern=, ?after=)",
        "events",
        Scope.READ,
        responses={200: None, 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody},
        path_params={"bus": "the bus name"},
    ),
]

"""A live view of a bus: `GET /v1/buses/{bus}/events/stream` as server-sent events.

Each event recorded after the request started (or after `?after=<position>`, to resume where a
dropped connection stopped, like SSE's `Last-Event-ID`) that matches the optional `?pattern=` is
sent as `event: cloudevent`, `id: <position>`, `data: <the event JSON>`. A comment line every
15 s keeps proxies from closing an idle stream. This is for people debugging rules, not a
delivery mechanism: a slow reader is disconnected rather than buffered without bound.

A request that accepts `application/json` and not `text/event-stream` asks for the delivery
history of the event whose id is `stream` instead (`routes.history`), which this URL would
otherwise hide.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from stellwerk.api.context import platform_of
from stellwerk.api.endpoints import Endpoint, name_param
from stellwerk.api.errors import ApiError, ErrorBody
from stellwerk.api.middleware import principal_of
from stellwerk.api.routes.buses import bus_name
from stellwerk.api.routes.history import history_of, wants_json
from stellwerk.auth import Principal, Scope
from stellwerk.patterns import CompiledPattern
from stellwerk.service import Tail

KEEPALIVE_SECONDS = 15.0


async def tail(request: Request) -> Response:
    if wants_json(request):
        # The delivery history of the event whose id is `stream` (docs/delivery-history.md):
        # the tail answers whatever else asks, so `curl` and EventSource keep working.
        return await history_of(request, "stream")
    name = bus_name(request)
    principal = principal_of(request.scope)
    facade = platform_of(request).tail
    after_text = request.query_params.get("after") or request.headers.get("last-event-id")
    after: int | None = None
    pattern = request.query_params.get("pattern")
    if after_text is not None and not after_text.isdigit():
        # The bus and the pattern are checked first, as before.
        await facade.open(principal, name, pattern, 0)
        raise ApiError(400, "InvalidRequest", "after must be a log position", field="after")
    if after_text is not None:
        after = int(after_text)
    start, compiled = await facade.open(principal, name, pattern, after)
    return StreamingResponse(
        _stream(facade, principal, name, start, compiled),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _stream(
    facade: Tail, principal: Principal, bus: str, after: int, pattern: CompiledPattern | None
) -> AsyncIterator[bytes]:
    yield b": tailing " + bus.encode() + b"\n\n"
    async for event in facade.follow(principal, bus, after, pattern, keepalive=KEEPALIVE_SECONDS):
        if event is None:
            yield b": keepalive\n\n"
        else:
            yield b"event: cloudevent\nid: %d\ndata: %s\n\n" % (event.position, event.body)


ENDPOINTS = [
    Endpoint(
        "get",
        "/v1/buses/{bus}/events/stream",
        tail,
        "Live view of a bus's events as server-sent events (?pattern=, ?after=)",
        "events",
        Scope.READ,
        responses={200: None, 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody},
        path_params={"bus": name_param("the bus name")},
    ),
]

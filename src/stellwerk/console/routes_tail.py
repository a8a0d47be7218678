"""The live tail of a bus: a page whose script follows a server-sent event stream of the bus's
events as they are recorded, filtered by an optional pattern (the API's tail, by session)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Final
from urllib.parse import urlencode

from starlette.responses import Response, StreamingResponse

from stellwerk.auth import Principal
from stellwerk.console.web import PREFIX, SECURITY_HEADERS, View, page
from stellwerk.patterns import CompiledPattern
from stellwerk.service import InvalidRequest, Tail

KEEPALIVE_SECONDS: Final = 15.0


@page
async def tail_page(view: View) -> Response:
    bus = view.param("bus")
    pattern = view.request.query_params.get("pattern") or None
    problem: str | None = None
    try:
        await view.platform.tail.open(view.principal, bus, pattern, 0)
    except InvalidRequest as exc:
        problem = exc.message
    query = urlencode({"pattern": pattern}) if pattern and problem is None else ""
    return view.render(
        "tail.html",
        bus=bus,
        pattern=pattern or "",
        problem=problem,
        stream=f"{PREFIX}/buses/{bus}/tail/stream" + (f"?{query}" if query else ""),
    )


@page
async def tail_stream(view: View) -> Response:
    bus = view.param("bus")
    pattern = view.request.query_params.get("pattern") or None
    after_text = view.request.headers.get("last-event-id")
    after = int(after_text) if after_text and after_text.isdigit() else None
    facade = view.platform.tail
    start, compiled = await facade.open(view.principal, bus, pattern, after)
    headers = {**SECURITY_HEADERS, "X-Accel-Buffering": "no"}
    return StreamingResponse(
        _stream(facade, view.principal, bus, start, compiled),
        media_type="text/event-stream",
        headers=headers,
    )


async def _stream(
    facade: Tail, principal: Principal, bus: str, after: int, pattern: CompiledPattern | None
) -> AsyncIterator[bytes]:
    yield b": tailing\n\n"
    async for event in facade.follow(principal, bus, after, pattern, keepalive=KEEPALIVE_SECONDS):
        if event is None:
            yield b": keepalive\n\n"
        else:
            yield b"event: cloudevent\nid: %d\ndata: %s\n\n" % (event.position, event.body)

"""Requests a capability answers from memory, answered ahead of Starlette's stack.

A cached public page costs little to find, and through Starlette's layers (middleware, routing,
a `Request`, a `Response`) the framework cost several times that. A capability may declare a
fast path (`Capability.fast_path`): given a request's scope, a whole `Answer`, or None to leave
the request to the app. It answers only what it can answer exactly as its route would, from
memory and at once (no I/O); anything else (a miss, a query string, a login) goes on to the app.
A request that needs its body or I/O (an API call whose every cost counts, like `PutEvents`)
may be taken with a `Deferred` instead: it reads the body and answers in full, errors included.
The HTTP metrics are recorded here as `RequestMetricsMiddleware` would, under the route
template the answer names.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final

import structlog
from starlette.types import ASGIApp, Receive, Scope, Send

from stellwerk.api.middleware.metrics import RequestSeries, method_label
from stellwerk.ops import Metrics

__all__ = ["Answer", "Answerer", "ClientGone", "Deferred", "FastPaths", "whole_body"]

log = structlog.get_logger(__name__)


class ClientGone(Exception):
    """The client went away before its body was read: there is no one to answer."""


async def whole_body(receive: Receive, limit: int, too_large: Callable[[int], Exception]) -> bytes:
    """A fast path's request body, read whole from `receive`: `too_large(limit)` is raised once
    it grows past `limit` bytes, `ClientGone` if the client leaves first. A body that came in one
    message (most: uvicorn passes what one read of the socket brought) is returned as it is,
    with no list and no join."""
    message = await receive()
    if message["type"] != "http.request":
        raise ClientGone
    body: bytes = message.get("body", b"")
    size = len(body)
    if size > limit:
        raise too_large(limit)
    if not message.get("more_body", False):
        return body
    chunks = [body]
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientGone
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


@dataclass(frozen=True, slots=True)
class Answer:
    """A whole response. `route`: the template of the route that would have answered (the
    metrics' label); `headers` as ASGI sends them (lower-case names, bytes)."""

    route: str
    status: int
    headers: Sequence[tuple[bytes, bytes]]
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Deferred:
    """A request taken whole: `respond(receive)` reads its body and gives the answer, its
    errors included. Once the body is read the app can no longer take the request over, so a
    fault in `respond` is logged and answered 500 as the app's error layer would."""

    route: str
    respond: Callable[[Receive], Awaitable[Answer]]


Answerer = Callable[[Scope], Answer | Deferred | None]

_FAULT_HEADERS: Final = ((b"content-type", b"application/json"),)
_FAULT_BODY: Final = (
    b'{"error":"InternalError","message":"the server failed to handle the request"}'
)


class FastPaths:
    """Asks each answerer in turn; the first answer is sent, else the request goes to `app`.

    `answerers()` gives them once the process is ready (None until then: every request goes
    to the app, which answers 503 as it does).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        answerers: Callable[[], Sequence[Answerer] | None],
        metrics: Metrics,
    ) -> None:
        self.app = app
        self._bind = answerers
        self._answerers: Sequence[Answerer] | None = None
        self.series = RequestSeries(metrics)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            answerers = self._answerers
            if answerers is None:
                answerers = self._answerers = self._bind()
            if answerers:
                started = time.perf_counter()
                for answerer in answerers:
                    try:
                        answer = answerer(scope)
                    except Exception:
                        # A fault of the fast path: the app's own route still answers right.
                        log.exception("a fast path failed", path=scope["path"])
                        continue
                    if answer is not None:
                        await self._send(answer, scope, receive, send, started)
                        return
        await self.app(scope, receive, send)

    async def _taken(self, deferred: Deferred, scope: Scope, receive: Receive) -> Answer:
        try:
            return await deferred.respond(receive)
        except Exception:
            log.exception("a fast path failed", path=scope["path"])
            return Answer(deferred.route, 500, _FAULT_HEADERS, _FAULT_BODY)

    async def _send(
        self, answer: Answer | Deferred, scope: Scope, receive: Receive, send: Send, started: float
    ) -> None:
        in_flight = self.series.in_flight
        in_flight.inc()
        route, status = answer.route, 500  # 500 unless sent: as the metrics middleware counts
        try:
            if isinstance(answer, Deferred):
                answer = await self._taken(answer, scope, receive)
            status = answer.status
            # A copy: a layer outside may add to the list it is given (MutableHeaders does).
            headers = list(answer.headers)
            await send({"type": "http.response.start", "status": answer.status, "headers": headers})
            await send({"type": "http.response.body", "body": answer.body})
        finally:
            in_flight.dec()
            elapsed = time.perf_counter() - started
            self.series.record(method_label(scope), route, status, elapsed)

"""`POST /v1/buses/{bus}/events` answered straight from the server, ahead of Starlette.

Ingest is the one route whose requests/s matter, and through Starlette's layers (a `Request`, a
`Response`, four wrapping `send` functions) the framework cost several times the handler. This
layer runs the same pipeline of checks as the Starlette routes, in one function: the declared
body size (`limits.check_length`), the `Gate` (key, scope, the tenant's request rate), the
bus name, then the ingest facade; errors through `errors.answer_to`; the HTTP metrics through
`metrics.RequestSeries` under the route's template. Every other request goes on to the app.
"""

from __future__ import annotations

import re
import time
from typing import Final

import msgspec
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from stellwerk.api.context import ServingLifecycle, platform_from
from stellwerk.api.errors import answer_to
from stellwerk.api.middleware.fast import ClientGone, whole_body
from stellwerk.api.middleware.limits import check_length, too_large
from stellwerk.api.middleware.metrics import RequestSeries
from stellwerk.auth import Scope as KeyScope
from stellwerk.ops import Metrics
from stellwerk.service import ServiceError, checked_name

ROUTE: Final = "/v1/buses/{bus}/events"
# Starlette's `{bus}` matches one path segment: anything but "/".
_PATH: Final = re.compile(r"/v1/buses/([^/]+)/events")
_JSON: Final = (b"content-type", b"application/json")
_encode: Final = msgspec.json.Encoder().encode


class _ScopeHeaders(Headers):
    """Starlette's `Headers` of a request, reading the scope's list where it is: made per
    request, it copies nothing (decoding looks at the headers only for a binary-mode or a
    plain JSON request)."""

    def __init__(self, scope: Scope) -> None:  # Headers' own is not called: nothing to copy
        self._scope = scope

    @property
    def _list(self) -> list[tuple[bytes, bytes]]:  # type: ignore[override]
        headers: list[tuple[bytes, bytes]] = self._scope["headers"]
        return headers


class IngestFastPath:
    """Answers `POST /v1/buses/{bus}/events` itself; passes every other request to `app`."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        lifecycle: ServingLifecycle,
        metrics: Metrics,
        max_body_bytes: int,
    ) -> None:
        self.app = app
        self.lifecycle = lifecycle
        self.series = RequestSeries(metrics)
        self.limit = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        match = _PATH.fullmatch(scope["path"])
        if match is None:
            await self.app(scope, receive, send)
            return
        in_flight = self.series.in_flight
        in_flight.inc()
        started = time.perf_counter()
        status = 500
        try:
            extra: dict[str, str] | None = None
            # The answer in this frame (not a helper's): every request's wait for the log
            # passes each frame between the task and the log twice.
            try:
                # One pass over the headers for what the checks need (the first of each, as
                # Starlette reads them; every Content-Length is checked, as the body limit
                # middleware does).
                authorization: str | None = None
                content_type: str | None = None
                for name, value in scope["headers"]:
                    if name == b"authorization":
                        if authorization is None:
                            authorization = value.decode("latin-1")
                    elif name == b"content-type":
                        if content_type is None:
                            content_type = value.decode("latin-1")
                    elif name == b"content-length":
                        check_length(value, self.limit)
                platform = platform_from(self.lifecycle)
                # The request's token is taken with the events' (one round trip to a shared
                # limiter).
                gate = platform.gate
                principal = gate.admitted(authorization, KeyScope.INGEST) or await gate.admit(
                    authorization, "POST", KeyScope.INGEST, rated=False
                )
                try:
                    bus = checked_name("bus", match.group(1), "bus")
                except ServiceError:
                    await platform.ingest.count_request(principal)  # a refusal costs a token too
                    raise
                body = await platform.ingest.put(
                    principal,
                    bus,
                    content_type,
                    _ScopeHeaders(scope),
                    lambda: whole_body(receive, self.limit, too_large),
                    request_counted=False,
                )
                status = 202
            except ClientGone:
                return  # counted as 500 like an exception, as the metrics middleware does
            except Exception as exc:
                error = answer_to(exc, "POST", scope["path"])
                status, body, extra = error.status, _encode(error.body()), error.headers
            headers = [(b"content-length", b"%d" % len(body)), _JSON]
            if extra:
                for name, value in extra.items():
                    headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        finally:
            in_flight.dec()
            self.series.record("POST", ROUTE, status, time.perf_counter() - started)

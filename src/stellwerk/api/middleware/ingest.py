"""`POST /v1/buses/{bus}/events` answered straight from the server, ahead of Starlette.

Ingest is the one route whose requests/s matter. Through Starlette each request passed eight
layers (server errors, errors, metrics, body limit, exceptions, router, auth, rate limit), built
a `Request` and a `Response`, and its answer went through four wrapping `send` functions; that
cost several times the handler. This layer does the same steps for that one route in one
function, with the same outcomes: body limit (400/413 from `Content-Length`, 413 while reading),
the route's auth and scope (401/403), the tenant's request rate (429), then
`routes.events.ingest`; errors as JSON (`ApiError`, else a logged 500); and the HTTP metrics
under the route's template. Every other request goes on to the app unchanged.
"""

from __future__ import annotations

import math
import re
import time
from typing import Final

import msgspec
import structlog
from prometheus_client import Counter, Histogram
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from stellwerk.api.errors import ApiError, unhandled
from stellwerk.api.middleware.limits import too_large
from stellwerk.api.routes.events import ingest
from stellwerk.auth import Scope as KeyScope
from stellwerk.names import InvalidNameError, check_name
from stellwerk.ops.lifecycle import Lifecycle, NotReadyError
from stellwerk.ops.metrics import Metrics
from stellwerk.ratelimit import TokenBuckets
from stellwerk.services import Services

log = structlog.get_logger("stellwerk.api")

ROUTE: Final = "/v1/buses/{bus}/events"
# Starlette's `{bus}` matches one path segment: anything but "/".
_PATH: Final = re.compile(r"/v1/buses/([^/]+)/events")
_JSON: Final = (b"content-type", b"application/json")
_encode: Final = msgspec.json.Encoder().encode


class _Disconnected(Exception):
    """The client went away before its body was read: there is no one to answer."""


class IngestFastPath:
    """Answers `POST /v1/buses/{bus}/events` itself; passes every other request to `app`."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        lifecycle: Lifecycle[Services],
        metrics: Metrics,
        rate_limit: TokenBuckets,
        max_body_bytes: int,
    ) -> None:
        self.app = app
        self.lifecycle = lifecycle
        self.metrics = metrics
        self.rate_limit = rate_limit
        self.limit = max_body_bytes
        self._series: dict[int, tuple[Counter, Histogram]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        match = _PATH.fullmatch(scope["path"])
        if match is None:
            await self.app(scope, receive, send)
            return
        in_flight = self.metrics.http_requests_in_flight
        in_flight.inc()
        started = time.perf_counter()
        status = 500
        try:
            try:
                status, body, extra = await self._answer(scope, receive, match.group(1))
            except ApiError as exc:
                status, body, extra = exc.status, _encode(exc.body()), exc.headers
            except _Disconnected:
                return  # counted as 500 like an exception, as the metrics middleware does
            except Exception as exc:
                error = unhandled(exc, "POST", scope["path"])
                status, body, extra = error.status, _encode(error.body()), error.headers
            headers = [(b"content-length", b"%d" % len(body)), _JSON]
            for name, value in extra.items():
                headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        finally:
            in_flight.dec()
            series = self._series.get(status)
            if series is None:
                series = self._series[status] = (
                    self.metrics.http_requests.labels("POST", ROUTE, str(status)),
                    self.metrics.http_request_duration.labels("POST", ROUTE),
                )
            series[0].inc()
            series[1].observe(time.perf_counter() - started)

    async def _answer(
        self, scope: Scope, receive: Receive, bus: str
    ) -> tuple[int, bytes, dict[str, str]]:
        authorization: str | None = None
        content_type: str | None = None
        declared: int | None = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                if authorization is None:
                    authorization = value.decode("latin-1")
            elif name == b"content-type":
                if content_type is None:
                    content_type = value.decode("latin-1")
            elif name == b"content-length":
                # Every Content-Length is checked, as the body limit middleware does.
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0:
                    raise ApiError(400, "InvalidRequest", "Content-Length is not a number")
                if declared > self.limit:
                    raise too_large(self.limit)
        services = self._services()
        principal = await services.authenticator.authenticate(authorization)
        if not principal.scope.allows(KeyScope.INGEST):
            raise ApiError(
                403,
                "Forbidden",
                f"a key with scope {principal.scope} may not POST here (needs {KeyScope.INGEST})",
            )
        wait = self.rate_limit.acquire(principal.tenant_id)
        if wait > 0:
            raise ApiError(
                429,
                "TooManyRequests",
                f"the tenant's request rate limit ({self.rate_limit.rate:g}/s) is exhausted",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        try:
            name = check_name("bus", bus)
        except InvalidNameError as exc:
            raise ApiError(400, "InvalidRequest", str(exc), field="bus") from None
        headers = Headers(scope=scope)
        status, content = await ingest(
            services, principal, name, content_type, headers, lambda: self._body(receive)
        )
        return status, content, {}

    def _services(self) -> Services:
        try:
            return self.lifecycle.services
        except NotReadyError as exc:
            raise ApiError(
                503, "ServiceUnavailable", str(exc), headers={"Retry-After": "1"}
            ) from None

    async def _body(self, receive: Receive) -> bytes:
        message = await receive()
        if message["type"] != "http.request":
            raise _Disconnected
        body: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            if len(body) > self.limit:
                raise too_large(self.limit)
            return body
        chunks = [body]
        received = len(body)
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise _Disconnected
            chunk: bytes = message.get("body", b"")
            received += len(chunk)
            if received > self.limit:
                raise too_large(self.limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

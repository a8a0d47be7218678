"""Pure ASGI middleware that counts and times HTTP requests by route template and status.

The route label is the template of the matched route (`/v1/buses/{bus}`), never the raw path, so the
number of time series stays bounded by the number of routes. Starlette's router writes the matched
route into the request's scope dict (`scope["route"]`) as it dispatches; the middleware shares that
dict with the router and reads it once the app has answered. Requests that match no route are
labelled `<unmatched>`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from starlette.routing import BaseRoute, Host, Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stellwerk.ops import CounterSeries, HistogramSeries, Metrics

__all__ = ["UNMATCHED", "RequestMetricsMiddleware", "RequestSeries", "method_label"]

UNMATCHED = "<unmatched>"

# Anything else a client sends as a method would become a label value of its choosing.
_KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"}
)


def method_label(scope: Scope) -> str:
    """The request's method as the metrics label it: one of the known, else `OTHER`."""
    method: str = scope["method"]
    return method if method in _KNOWN_METHODS else "OTHER"


class RequestSeries:
    """The request metrics' series, each looked up once per label set. Bounded like the labels
    themselves. Shared by the middleware and the fast paths."""

    def __init__(self, metrics: Metrics) -> None:
        self.in_flight = metrics.http_requests_in_flight
        self._metrics = metrics
        self._series: dict[tuple[str, str, str], tuple[CounterSeries, HistogramSeries]] = {}

    def record(self, method: str, route: str, status: int, elapsed: float) -> None:
        key = (method, route, str(status))
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = (
                self._metrics.http_requests.labels(*key),
                self._metrics.http_request_duration.labels(method, route),
            )
        series[0].inc()
        series[1].observe(elapsed)


class RequestMetricsMiddleware:
    """Records `stellwerk_http_requests_total`, `..._duration_seconds` and `..._in_flight`.

    The status is the one actually sent in `http.response.start`; a request whose app raised
    before starting a response counts as 500, which is what the server error handler outside this
    middleware will answer. Lifespan and websocket scopes pass through untouched.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.series = RequestSeries(metrics)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        method = method_label(scope)
        # Routers and mounts rewrite these keys in the shared scope; the originals are needed to
        # replay the match when a mount sits between the router and the endpoint.
        path = scope["path"]
        root_path = scope.get("root_path", "")
        status = 0

        async def send_recording_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        in_flight = self.series.in_flight
        in_flight.inc()
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_recording_status)
        except BaseException:
            if status == 0:
                status = 500
            raise
        finally:
            elapsed = time.perf_counter() - started
            in_flight.dec()
            route = route_template(scope, path=path, root_path=root_path)
            self.series.record(method, route, status, elapsed)


def route_template(scope: Scope, *, path: str, root_path: str) -> str:
    """The template of the route that handled a request, from the scope after dispatch.

    `path` and `root_path` are the values the scope had before the router saw it.
    """
    route = scope.get("route")
    if route is None:
        return UNMATCHED
    if scope.get("root_path", "") == root_path and not isinstance(route, Mount | Host):
        # No mount on the way: the innermost route's template is the whole template.
        template = getattr(route, "path_format", None)
        return template if isinstance(template, str) else UNMATCHED
    router = scope.get("router")
    routes = getattr(router, "routes", None)
    if routes is None:
        return UNMATCHED
    probe = dict(scope)
    probe["path"] = path
    probe["root_path"] = root_path
    return _match_template(routes, probe) or UNMATCHED


def _match_template(routes: Iterable[BaseRoute], scope: dict[str, Any]) -> str | None:
    """Replays Starlette's dispatch (first full match, else first partial) collecting templates.

    Only mounted and host-routed requests get here, so the second match is the exception.
    """
    chosen: tuple[BaseRoute, Scope] | None = None
    for route in routes:
        match, child_scope = route.matches(scope)
        if match is Match.FULL:
            chosen = (route, child_scope)
            break
        if match is Match.PARTIAL and chosen is None:
            chosen = (route, child_scope)
    if chosen is None:
        return None
    route, child_scope = chosen
    if isinstance(route, Mount | Host):
        prefix = route.path_format.removesuffix("/{path}") if isinstance(route, Mount) else ""
        inner_routes = route.routes
        if not inner_routes:
            # A mounted plain ASGI app (static files, say): its own paths are not ours to label.
            return route.path_format if isinstance(route, Mount) else UNMATCHED
        inner = _match_template(inner_routes, {**scope, **child_scope})
        return None if inner is None else prefix + inner
    template = getattr(route, "path_format", None)
    return template if isinstance(template, str) else None

"""An HTTP endpoint declared once: its route, the scope each method needs, its OpenAPI entry."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from stellwerk.api.middleware import GateMiddleware
from stellwerk.auth import Scope
from stellwerk.service import Platform

Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    scope: Scope | None  # None: public, no key needed
    request_body: type | None = None
    request_content_types: tuple[str, ...] = ("application/json",)
    responses: Mapping[int, type | None] = field(default_factory=dict)
    path_params: Mapping[str, str] = field(default_factory=dict)


def build_routes(endpoints: Sequence[Endpoint], platform: Callable[[], Platform]) -> list[Route]:
    """One Starlette route per path; the methods of a path share one gate."""
    by_path: dict[str, list[Endpoint]] = {}
    for endpoint in endpoints:
        by_path.setdefault(endpoint.path, []).append(endpoint)
    routes = []
    for path, group in by_path.items():
        handlers = {e.method.upper(): e.handler for e in group}
        if "GET" in handlers:
            handlers.setdefault("HEAD", handlers["GET"])
        required = {e.method.upper(): e.scope for e in group if e.scope is not None}
        if "GET" in required:
            required.setdefault("HEAD", required["GET"])
        if required and len(required) != len(handlers):
            raise ValueError(f"{path}: mixes public and protected methods")
        middleware = [Middleware(GateMiddleware, platform, required)] if required else []
        routes.append(
            Route(
                path,
                _dispatch(handlers),
                methods=list(handlers),
                middleware=middleware,
                include_in_schema=False,
            )
        )
    return routes


def _dispatch(handlers: Mapping[str, Handler]) -> Handler:
    if len(handlers) == 1 or set(handlers) == {"GET", "HEAD"}:
        return next(iter(handlers.values()))

    async def dispatch(request: Request) -> Response:
        return await handlers[request.method](request)

    return dispatch

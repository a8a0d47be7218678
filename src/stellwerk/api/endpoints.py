"""An HTTP endpoint declared once: its route, the scope each method needs, its OpenAPI entry."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from stellwerk.api.middleware import GateMiddleware
from stellwerk.api.openapi import Parameter
from stellwerk.auth import Scope
from stellwerk.names import NAME_RULE, Name
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
    request_body: Any = None
    # False when the handler reads an absent body as an empty one (`read_json(..., empty=...)`).
    request_body_required: bool = True
    request_content_types: tuple[str, ...] = ("application/json",)
    responses: Mapping[int, type | None] = field(default_factory=dict)
    # A plain string only describes a parameter; a `Parameter` also gives its type, so that the
    # document says which values the handler takes (see `name_param`).
    path_params: Mapping[str, str | Parameter] = field(default_factory=dict)
    query_params: Mapping[str, str | Parameter] = field(default_factory=dict)


def name_param(description: str) -> Parameter:
    """A path parameter that the handler checks with `path_name`: a name under NAME_RULE.

    Without the pattern a generated client sends names that the server refuses with 400."""
    return Parameter(f"{description}, {NAME_RULE}", Name)


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

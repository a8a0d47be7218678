"""The gate of each protected route, as pure ASGI: the caller's key, its scope for the method,
and the tenant's request rate, checked by the service layer's `Gate`.

Sitting inside the route (not in front of the router) means the route is known when a request is
refused, so metrics label a 401 by its route, and each route states the scope each method needs.
The ingest fast path passes the same `Gate` (see `ingest.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from starlette.types import ASGIApp, Receive, Scope, Send

from stellwerk.api.errors import answer_to
from stellwerk.auth import Principal
from stellwerk.auth import Scope as KeyScope
from stellwerk.service import Platform

PRINCIPAL = "stellwerk.principal"


def authorization_of(scope: Scope) -> str | None:
    """The request's first `Authorization` header."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            return str(value.decode("latin-1"))
    return None


class GateMiddleware:
    """Admits a request through the `Gate`, or answers its refusal (401, 403, 429, 503)."""

    def __init__(
        self, app: ASGIApp, platform: Callable[[], Platform], required: Mapping[str, KeyScope]
    ) -> None:
        self.app = app
        self.platform = platform
        self.required = required

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        try:
            gate = self.platform().gate
            principal = await gate.admit(authorization_of(scope), method, self.required.get(method))
        except Exception as exc:
            await answer_to(exc, method, scope["path"]).response()(scope, receive, send)
            return
        scope[PRINCIPAL] = principal
        await self.app(scope, receive, send)


def principal_of(scope: Scope) -> Principal:
    principal = scope.get(PRINCIPAL)
    assert isinstance(principal, Principal), "route is not wrapped in GateMiddleware"
    return principal

"""Authentication and authorization by API key, as pure ASGI wrapped around each protected route.

Sitting inside the route (not in front of the router) means the route is known when a request is
refused, so metrics label a 401 by its route, and each route states the scope each method needs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from stellwerk.api.errors import ApiError
from stellwerk.auth import MalformedKeyError, Principal, verify_key
from stellwerk.auth import Scope as KeyScope
from stellwerk.auth.keys import parse_key
from stellwerk.ratelimit import TokenBuckets
from stellwerk.storage import TtlCache
from stellwerk.storage.control import ApiKeyRecord, ControlPlane, TenantRecord

PRINCIPAL = "stellwerk.principal"
# Verified keys remembered at most (see `Authenticator`); a bound, not a working-set size.
_MAX_VERIFIED = 10_000


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "Unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


@dataclass(frozen=True, slots=True)
class _Cached:
    key: ApiKeyRecord
    tenant: TenantRecord


class Authenticator:
    """Turns a bearer key into a `Principal`, with a short cache so ingest does not hit the store.

    A key revoked through this process is forgotten at once; one revoked elsewhere (another
    process, the CLI) stops working within `cache_seconds`.

    A key that passed is remembered with its principal, tied to the cached record it was checked
    against: while that record is the one cached, the same `Authorization` value gets the same
    principal without parsing the key and hashing it again (about 5 us of a single-event
    ingest's 90 us in the event loop). A reload, expiry or `forget` replaces or drops the record,
    so the next request goes through the whole check again: revocation takes as long as before.
    Only keys that passed are remembered, so made-up keys cannot fill the table.
    """

    def __init__(
        self,
        control: ControlPlane,
        *,
        cache_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._control = control
        # Unknown ids are cached too (briefly), so a flood of made-up keys does not reach the store.
        self._keys: TtlCache[str, _Cached | None] = TtlCache(self._load, cache_seconds, clock)
        self._verified: dict[str, tuple[_Cached, Principal]] = {}

    async def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise unauthorized("an API key is required: Authorization: Bearer <key>")
        remembered = self._verified.get(authorization)
        if remembered is not None and self._keys.fresh(remembered[1].key_id) is remembered[0]:
            return remembered[1]
        kind, _, key = authorization.partition(" ")
        if kind.lower() != "bearer" or not key.strip():
            raise unauthorized("the Authorization header must be 'Bearer <key>'")
        key = key.strip()
        try:
            parts = parse_key(key)
        except MalformedKeyError as exc:
            raise unauthorized(str(exc)) from None
        entry = await self._lookup(parts.key_id)
        if entry is None or not verify_key(key, entry.key.key_hash) or entry.key.revoked_at:
            raise unauthorized("the API key is not valid (unknown or revoked)")
        principal = Principal(
            tenant_id=entry.tenant.id,
            tenant=entry.tenant.name,
            key_id=entry.key.id,
            scope=entry.key.scope,
        )
        if len(self._verified) >= _MAX_VERIFIED:
            self._verified.clear()
        self._verified[authorization] = (entry, principal)
        return principal

    def forget(self, key_id: str) -> None:
        self._keys.forget(key_id)

    async def _lookup(self, key_id: str) -> _Cached | None:
        return await self._keys.get(key_id)

    async def _load(self, key_id: str) -> _Cached | None:
        found = await self._control.find_key(key_id)
        if found is None:
            return None
        return _Cached(key=found[0], tenant=found[1])


class AuthMiddleware:
    """Requires a valid key whose scope allows the request's method on this route."""

    def __init__(
        self,
        app: ASGIApp,
        authenticator: Callable[[], Authenticator],
        required: Mapping[str, KeyScope],
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.required = required

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        authorization = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
                break
        try:
            principal = await self.authenticator().authenticate(authorization)
            needed = self.required.get(scope["method"])
            if needed is None or not principal.scope.allows(needed):
                raise ApiError(
                    403,
                    "Forbidden",
                    f"a key with scope {principal.scope} may not {scope['method']} here"
                    + (f" (needs {needed})" if needed else ""),
                )
        except ApiError as exc:
            await exc.response()(scope, receive, send)
            return
        scope[PRINCIPAL] = principal
        await self.app(scope, receive, send)


def principal_of(scope: Scope) -> Principal:
    principal = scope.get(PRINCIPAL)
    assert isinstance(principal, Principal), "route is not wrapped in AuthMiddleware"
    return principal


class TenantRateLimitMiddleware:
    """429 with Retry-After when the caller's tenant spends its request budget (after auth)."""

    def __init__(self, app: ASGIApp, buckets: TokenBuckets) -> None:
        self.app = app
        self.buckets = buckets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            wait = self.buckets.acquire(principal_of(scope).tenant_id)
            if wait > 0:
                error = ApiError(
                    429,
                    "TooManyRequests",
                    f"the tenant's request rate limit ({self.buckets.rate:g}/s) is exhausted",
                    headers={"Retry-After": str(max(1, math.ceil(wait)))},
                )
                await error.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)

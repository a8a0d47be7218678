"""Who may do what: API keys into principals, their scope, and each tenant's request rate.

Every request that needs a key passes `Gate.admit` once, whichever way it arrived (the ingest
fast path or a Starlette route), so both answer the same refusals in the same order: 401 for no
valid key, 403 for a scope that does not allow the method, 429 when the tenant's requests are
spent.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from stellwerk.auth import MalformedKeyError, Principal, Scope, parse_key, verify_key
from stellwerk.refs import TenantId
from stellwerk.secrets import DecryptionError
from stellwerk.service.errors import Forbidden, RequestRateSpent, Unauthorized
from stellwerk.service.quotas import LEFT_TO_INGEST, RequestToken, TenantRate
from stellwerk.storage import TtlCache
from stellwerk.storage.control import ApiKeyRecord, ControlPlane, TenantRecord

# Verified keys remembered at most (see `Authenticator`); a bound, not a working-set size.
_MAX_VERIFIED = 10_000

T = TypeVar("T")


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
    principal without parsing and hashing the key again. A reload, expiry or `forget` replaces
    or drops the record, so revocation takes no longer. Only keys that passed are remembered, so
    made-up keys cannot fill the table.
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
        # Signing keys opened, tied to the cached record as `_verified` is: unsealing costs an
        # AES-GCM decryption, and a signed client asks for its key with every request.
        self._opened: dict[str, tuple[_Cached, Principal, str]] = {}

    def remembered(self, authorization: str | None) -> Principal | None:
        """The principal of a key that passed, while the record it passed against is the one
        cached (as `authenticate` would answer, without a coroutine); None: ask that."""
        if not authorization:
            return None
        remembered = self._verified.get(authorization)
        if remembered is not None and self._keys.fresh(remembered[1].key_id) is remembered[0]:
            return remembered[1]
        return None

    async def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise Unauthorized("an API key is required: Authorization: Bearer <key>")
        remembered = self._verified.get(authorization)
        if remembered is not None and self._keys.fresh(remembered[1].key_id) is remembered[0]:
            return remembered[1]
        kind, _, key = authorization.partition(" ")
        if kind.lower() != "bearer" or not key.strip():
            raise Unauthorized("the Authorization header must be 'Bearer <key>'")
        key = key.strip()
        try:
            parts = parse_key(key)
        except MalformedKeyError as exc:
            raise Unauthorized(str(exc)) from None
        entry = await self._keys.get(parts.key_id)
        if entry is None or not verify_key(key, entry.key.key_hash) or entry.key.revoked_at:
            raise Unauthorized("the API key is not valid (unknown or revoked)")
        principal = Principal(entry.tenant.ref, key_id=entry.key.id, scope=entry.key.scope)
        if len(self._verified) >= _MAX_VERIFIED:
            self._verified.clear()
        self._verified[authorization] = (entry, principal)
        return principal

    async def signing_key(self, key_id: str) -> tuple[Principal, str]:
        """The principal of key `key_id` and the key's text, for a request signed with it
        rather than carrying it (AWS Signature Version 4): the caller proves the request with
        the text and must compare in constant time. Unauthorized for an unknown or revoked key,
        or one without a sealed copy (created before signing existed, or by a tool that had no
        secret key)."""
        remembered = self._opened.get(key_id)
        if remembered is not None and self._keys.fresh(key_id) is remembered[0]:
            return remembered[1], remembered[2]
        entry = await self._keys.get(key_id)
        if entry is None or entry.key.revoked_at:
            raise Unauthorized("the access key id is not a valid key (unknown or revoked)")
        try:
            key = self._control.open_sealed_key(entry.key)
        except DecryptionError:
            key = None
        if key is None:
            raise Unauthorized(
                f"key {key_id} cannot sign requests here: this site has no sealed copy of it "
                "(made before request signing existed, by a tool without the server's secret "
                "key, or mirrored from a peer site that did not send its text); create a new key"
            )
        principal = Principal(entry.tenant.ref, key_id=entry.key.id, scope=entry.key.scope)
        if len(self._opened) >= _MAX_VERIFIED:
            self._opened.clear()
        self._opened[key_id] = (entry, principal, key)
        return principal, key

    def forget(self, key_id: str) -> None:
        self._keys.forget(key_id)

    async def _load(self, key_id: str) -> _Cached | None:
        found = await self._control.find_key(key_id)
        if found is None:
            return None
        return _Cached(key=found[0], tenant=found[1])


class Gate:
    """The checks in front of every request that needs a key: key, scope, the tenant's rate."""

    def __init__(self, authenticator: Authenticator, request_rate: TenantRate) -> None:
        self.authenticator = authenticator
        self.request_rate = request_rate

    async def admit(
        self, authorization: str | None, method: str, needed: Scope | None, *, rated: bool = True
    ) -> Principal:
        """The caller's principal if it may make this request now, else the refusal.

        `needed` None: the method needs a scope nobody has (no key may use it here).
        `rated` False: the caller takes the request's token itself, together with others
        (ingest takes it with the events', one round trip to a shared limiter)."""
        return await self.allow(
            await self.authenticator.authenticate(authorization), method, needed, rated=rated
        )

    def admitted(self, authorization: str | None, needed: Scope) -> Principal | None:
        """The caller's principal when its key is remembered and its scope allows `needed`:
        what `admit(..., rated=False)` answers, without a coroutine. None: ask `admit`, which
        also gives the refusal."""
        principal = self.authenticator.remembered(authorization)
        if principal is None or not principal.scope.allows(needed):
            return None
        return principal

    async def allow(
        self, principal: Principal, method: str, needed: Scope | None, *, rated: bool = True
    ) -> Principal:
        """`principal` if its scope and its tenant's rate allow the request now (an edge that
        authenticates in its own way, such as a signed request, asks this), else the refusal."""
        if needed is None or not principal.scope.allows(needed):
            raise Forbidden(
                f"a key with scope {principal.scope} may not {method} here"
                + (f" (needs {needed})" if needed else "")
            )
        if rated:
            await self.count(principal.tenant_id)
        return principal

    async def count(self, tenant_id: TenantId) -> None:
        """Take one request's token from the tenant's budget: `RequestRateSpent` when spent."""
        spent = await self.request_rate.acquire(tenant_id)
        if spent is not None:
            raise RequestRateSpent(
                f"the tenant's request rate limit ({spent.rate:g}/s) is exhausted",
                retry_after=spent.retry_after,
            )

    async def counted(self, tenant_id: TenantId, run: Callable[[], Awaitable[T]]) -> T:
        """`run()`, a request admitted with `rated=False` whose events go through ingest
        (PutEvents, a tracking collector): ingest's first take of its events takes the
        request's token with theirs, one limiter call (one round trip to a shared limiter).
        A request that took no events (refused before, nothing valid) takes its token alone
        here once done, so every request still counts; a spent rate then refuses it."""
        token = RequestToken(tenant_id)
        left = LEFT_TO_INGEST.set(token)
        try:
            answer = await run()
        except Exception:
            if not token.taken:
                token.taken = True
                await self.count(tenant_id)
            raise
        finally:
            LEFT_TO_INGEST.reset(left)
        if not token.taken:
            await self.count(tenant_id)
        return answer

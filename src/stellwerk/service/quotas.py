"""Per-tenant quotas: what the operator sets (`stellwerk tenants limits`), what every server
enforces, and the limiter that counts (shared through Redis with `--redis-url`).

Rates are read through a short cache: a change announced in this process or through the signals
is taken in at once (`forget`), one made by the command line beside running servers within the
cache's time to live (`--key-cache-seconds`, 5 s by default). Counts (buses, rules per bus) are
checked by the control plane inside the write that would exceed them, so they hold exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import Final

from stellwerk.ratelimit import Limiter, LocalLimiter, SharedLimiter, Spent, Take
from stellwerk.refs import TenantId, TenantName
from stellwerk.service.errors import InvalidRequest, NotFound
from stellwerk.storage import TtlCache
from stellwerk.storage.control import LIMIT_FIELDS, ControlPlane, TenantLimits

MAX_RATE: Final = 1e9  # per second: above any real budget, below where floats get coarse
MAX_COUNT: Final = 1_000_000
RATE_FIELDS: Final = frozenset(
    {"events_per_second", "requests_per_second", "target_invocations_per_second"}
)


class RequestToken:
    """A request's token that the gate left to ingest (`Gate.counted`, the ingest fast path):
    the first take of the request's events takes it with theirs, in one limiter call; if none
    does, the gate takes it alone once the request is done."""

    __slots__ = ("taken", "tenant_id")

    def __init__(self, tenant_id: TenantId) -> None:
        self.tenant_id = tenant_id
        self.taken = False


# The token of the request under way in this task, if the gate left it to ingest: how it
# reaches `Ingest` through a capability's own code (a collector, PutEvents' entries by bus).
LEFT_TO_INGEST: Final[ContextVar[RequestToken | None]] = ContextVar(
    "stellwerk_request_token", default=None
)


def _checked(name: str, value: float | None) -> float | int | None:
    if value is None:
        return None
    shown = name.replace("_", "-")
    if name in RATE_FIELDS:
        if isinstance(value, bool) or not math.isfinite(value) or not 0 < value <= MAX_RATE:
            raise InvalidRequest(
                f"{shown} must be a number above 0 and at most {MAX_RATE:g} (got {value!r})",
                field=name,
            )
        return float(value)
    if isinstance(value, bool) or int(value) != value or not 1 <= value <= MAX_COUNT:
        raise InvalidRequest(
            f"{shown} must be a whole number from 1 to {MAX_COUNT} (got {value!r})", field=name
        )
    return int(value)


class Quotas:
    """The tenants' own limits, set by the operator and cached for the servers."""

    def __init__(
        self, control: ControlPlane, *, ttl: float = 5.0, limiter: Limiter | None = None
    ) -> None:
        self._control = control
        self._cache: TtlCache[TenantId, TenantLimits] = TtlCache(control.limits.get, ttl)
        # Tenant names to ids, for work that knows a tenant by name (a delivery).
        self._ids: TtlCache[TenantName, TenantId | None] = TtlCache(self._id_of, ttl)
        self.limiter: Limiter = limiter or LocalLimiter()

    async def show(self, tenant: str) -> TenantLimits:
        return await self._control.limits.get(await self._tenant_id(tenant))

    async def update(self, tenant: str, values: Mapping[str, float | None]) -> TenantLimits:
        """Set the limits given (None clears one back to the server's default); the others
        stay. Returns the tenant's limits now."""
        unknown = sorted(set(values) - set(LIMIT_FIELDS))
        if unknown:
            raise InvalidRequest(f"unknown limits: {', '.join(unknown)}")
        checked = {name: _checked(name, value) for name, value in values.items()}
        return await self._control.limits.update(await self._tenant_id(tenant), checked)

    async def clear(self, tenant: str) -> TenantLimits:
        """Every limit of the tenant back to the server's default."""
        return await self.update(tenant, dict.fromkeys(LIMIT_FIELDS))

    async def of(self, tenant_id: TenantId) -> TenantLimits:
        """The tenant's own limits as the servers enforce them (cached)."""
        return self._cache.fresh(tenant_id) or await self._cache.get(tenant_id)

    def forget(self, tenant_id: TenantId) -> None:
        self._cache.forget(tenant_id)

    def unlimited_held(self, tenant_id: TenantId, rates: Sequence[TenantRate]) -> bool:
        """True when the tenant's limits are cached and none of `rates` is limited for it:
        `acquire_together` would grant at once. False: ask it."""
        limits = self._cache.fresh(tenant_id)
        if limits is None:
            return False
        return all(rate.rate_in(limits) <= 0 for rate in rates)

    async def acquire_together(
        self, tenant_id: TenantId, takes: Sequence[tuple[TenantRate, float]]
    ) -> tuple[TenantRate, Spent] | None:
        """Take from several of the tenant's rates at once, all or none, in one call to the
        limiter (one round trip to Redis): None when granted, else the first rate refused."""
        limits = self._cache.fresh(tenant_id) or await self._cache.get(tenant_id)
        rates = [rate.rate_in(limits) for rate, _ in takes]
        if all(r <= 0 for r in rates):
            return None
        waits = await self.limiter.acquire_all(
            [
                Take(f"{rate.kind}:{tenant_id}", r, tokens)
                for (rate, tokens), r in zip(takes, rates, strict=True)
            ]
        )
        for (rate, _), r, wait in zip(takes, rates, waits, strict=True):
            if wait > 0:
                return rate, Spent(r, wait)
        return None

    def rate(self, kind: str, limit: str, default: float) -> TenantRate:
        """The tenant rate `limit` (one of the rate fields), `default` where none is set."""
        if limit not in RATE_FIELDS:
            raise ValueError(f"{limit} is not a rate")
        return TenantRate(self, kind, limit, default)

    async def id_of(self, name: TenantName) -> TenantId | None:
        return await self._ids.get(name)

    async def _id_of(self, name: TenantName) -> TenantId | None:
        tenant = await self._control.get_tenant(name)
        return None if tenant is None else tenant.id

    async def close(self) -> None:
        if isinstance(self.limiter, SharedLimiter):
            await self.limiter.close()

    async def _tenant_id(self, name: str) -> TenantId:
        tenant = await self._control.get_tenant(name)
        if tenant is None:
            raise NotFound.of(f"tenant {name!r}")
        return tenant.id


class TenantRate:
    """One of a tenant's rates (its own or the server's default), drawn from the limiter."""

    def __init__(self, quotas: Quotas, kind: str, limit: str, default: float) -> None:
        self._quotas = quotas
        self.kind = kind
        self._limit = limit
        self.default = default

    async def rate_of(self, tenant_id: TenantId) -> float:
        return self.rate_in(await self._quotas.of(tenant_id))

    def rate_in(self, limits: TenantLimits) -> float:
        own: float | None = getattr(limits, self._limit)
        return self.default if own is None else own

    async def acquire(
        self, tenant_id: TenantId, tokens: float = 1.0, key: str = ""
    ) -> Spent | None:
        """Take `tokens` from the tenant's budget (`key` splits it further, one per target):
        None when granted, else what was spent."""
        rate = await self.rate_of(tenant_id)
        if rate <= 0:
            return None
        take = Take(f"{self.kind}:{tenant_id}{key}", rate, tokens)
        wait = (await self._quotas.limiter.acquire_all([take]))[0]
        return Spent(rate, wait) if wait > 0 else None

    async def acquire_named(self, tenant: TenantName, key: str) -> Spent | None:
        """`acquire` one token for tenant `tenant` (a name), from the budget of `key`."""
        tenant_id = await self._quotas.id_of(tenant)
        if tenant_id is None:
            return None  # gone: its deliveries are dead-lettered as orphans
        return await self.acquire(tenant_id, 1.0, f":{key}")

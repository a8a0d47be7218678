"""Sources: the use cases of `/v1/sources/{name}`, and the collector's lookup of a write key.

A source binds a write key to a tenant's bus and a tracker protocol. The collector resolves a
write key on every request, so resolutions are cached by the key's digest: a batch costs no
round trip to the control plane. A change made through this process applies at once; one made
through another process (another gateway, the command line) within `cache_seconds`, as API
keys do.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Final, Generic, TypeVar

from stellwerk.auth import Principal
from stellwerk.capability import Listing
from stellwerk.clock import utc_now
from stellwerk.service import Buses, Conflict, NotFound
from stellwerk.tracking import writekeys
from stellwerk.tracking.model import (
    MAX_ORIGIN_LENGTH,
    MAX_SOURCES_PER_TENANT,
    Binding,
    Source,
    SourceInput,
    checked_input,
)
from stellwerk.tracking.store import ChangedConcurrently, SourceStore, TooManySources

# A bound on what the caches hold, not a working-set size: past it they start again empty.
_MAX_CACHED: Final = 10_000

K = TypeVar("K")
V = TypeVar("V")


class _Expiring(Generic[K, V]):
    """Values kept for `ttl` seconds, absence included (so made-up keys reach the store once
    each, not once a request)."""

    def __init__(self, ttl: float, clock: Callable[[], float]) -> None:
        self._ttl = ttl
        self._clock = clock
        self.entries: dict[K, tuple[float, V]] = {}

    def get(self, key: K) -> tuple[bool, V | None]:
        found = self.entries.get(key)
        if found is not None and found[0] > self._clock():
            return True, found[1]
        return False, None

    def put(self, key: K, value: V) -> None:
        if len(self.entries) >= _MAX_CACHED:
            self.entries.clear()
        self.entries[key] = (self._clock() + self._ttl, value)


class Sources:
    def __init__(
        self,
        store: SourceStore,
        buses: Buses,
        *,
        cache_seconds: float = 5.0,
        clock: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._buses = buses
        self._clock = clock
        self._bindings: _Expiring[str, Binding | None] = _Expiring(cache_seconds, monotonic)
        self._origins: _Expiring[str, bool] = _Expiring(cache_seconds, monotonic)

    async def put(self, principal: Principal, name: str, body: SourceInput) -> tuple[Source, bool]:
        """Create or replace source `name`; the source (with its write key if it is new) and
        whether it was created."""
        body = checked_input(body)
        await self._buses.record(principal.tenant_id, body.bus)
        try:
            source, created = await self._store.put(
                principal.ref, name, body, self._clock(), limit=MAX_SOURCES_PER_TENANT
            )
        except TooManySources as exc:
            raise Conflict(str(exc), code="LimitExceeded") from None
        except ChangedConcurrently as exc:
            raise Conflict(f"{exc}; try again") from None
        self._forget(principal, name)
        return source, created

    async def rotate(self, principal: Principal, name: str) -> Source:
        """A new write key for source `name`, shown this once; the old one is refused at once
        by this process and within `cache_seconds` by the others."""
        source = await self._store.rotate(principal.tenant_id, name, self._clock())
        if source is None:
            raise NotFound.of(f"source {name!r}")
        self._forget(principal, name)
        return source

    async def get(self, principal: Principal, name: str) -> Source:
        found = await self._store.get(principal.tenant_id, name)
        if found is None:
            raise NotFound.of(f"source {name!r}")
        return found

    async def all(self, principal: Principal) -> list[Source]:
        return await self._store.all(principal.tenant_id)

    async def listing(self, principal: Principal) -> list[Listing]:
        """The tenant's sources as other capabilities list them (`Facades.directories`); never
        a write key."""
        return [
            Listing(s.name, f"{s.kind} source onto bus {s.bus}") for s in await self.all(principal)
        ]

    async def delete(self, principal: Principal, name: str) -> None:
        """Delete source `name`: its write key is refused from now on."""
        if await self._store.delete(principal.tenant_id, name) is None:
            raise NotFound.of(f"source {name!r}")
        self._forget(principal, name)

    async def resolve(self, write_key: str) -> Binding | None:
        """The source that `write_key` names, or None for a key that names none."""
        key_id = writekeys.key_id(write_key)
        if key_id is None:
            return None
        digest = writekeys.digest(write_key)
        cached, binding = self._bindings.get(digest)
        if cached:
            return binding
        binding = await self._store.binding(key_id)
        if binding is not None and not writekeys.matches(digest, binding.key_digest):
            binding = None
        self._bindings.put(digest, binding)
        return binding

    async def origin_allowed(self, origin: str) -> bool:
        """Whether some source allows `origin`: all a CORS preflight, which carries no write
        key, can be told. The request that follows is checked against its own source."""
        if len(origin) > MAX_ORIGIN_LENGTH:
            return False  # no source can allow it: not worth a query
        cached, allowed = self._origins.get(origin)
        if cached:
            return bool(allowed)
        allowed = await self._store.origin_allowed(origin)
        self._origins.put(origin, allowed)
        return allowed

    def _forget(self, principal: Principal, name: str) -> None:
        """Drop what this process cached of source `name`, so its change applies at once."""
        stale = [
            digest
            for digest, (_, binding) in self._bindings.entries.items()
            if binding is not None and binding.tenant.id == principal.tenant_id
            if binding.name == name
        ]
        for digest in stale:
            del self._bindings.entries[digest]
        self._origins.entries.clear()

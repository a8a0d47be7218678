"""Short-lived caches of what ingest needs per request: the bus (with its validation mode) and
the compiled schema of each event type, so the hot path does not query the control plane.

Changes made through this process take effect at once (`forget`); changes made by another process
take effect within `ttl` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from stellwerk.schemas import CompiledSchema, InvalidSchemaError, compile_schema
from stellwerk.storage.control.store import BusRecord, ControlPlane

K = TypeVar("K")
V = TypeVar("V")

_MAX_ENTRIES = 100_000


class TtlCache(Generic[K, V]):
    """Values (absence included) loaded on demand and kept for `ttl` seconds."""

    def __init__(
        self,
        load: Callable[[K], Awaitable[V]],
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self._ttl = ttl
        self._clock = clock
        self._entries: dict[K, tuple[float, V]] = {}

    async def get(self, key: K) -> V:
        now = self._clock()
        cached = self._entries.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        value = await self._load(key)
        if len(self._entries) >= _MAX_ENTRIES:
            self._entries.clear()
        self._entries[key] = (now + self._ttl, value)
        return value

    def forget(self, key: K) -> None:
        self._entries.pop(key, None)


class BusDirectory:
    def __init__(self, control: ControlPlane, ttl: float = 5.0) -> None:
        async def load_bus(key: tuple[str, str]) -> BusRecord | None:
            return await control.get_bus(*key)

        async def load_schema(key: tuple[str, str]) -> CompiledSchema | None:
            record = await control.schemas.get(*key)
            if record is None:
                return None
            try:
                return compile_schema(record.document)
            except InvalidSchemaError:
                # Saved schemas were checked on save; one that a newer Stellwerk rejects acts
                # as absent rather than refusing every event of its type.
                return None

        self._buses: TtlCache[tuple[str, str], BusRecord | None] = TtlCache(load_bus, ttl)
        self._schemas: TtlCache[tuple[str, str], CompiledSchema | None] = TtlCache(
            load_schema, ttl
        )

    async def bus(self, tenant_id: str, name: str) -> BusRecord | None:
        return await self._buses.get((tenant_id, name))

    async def schema(self, tenant_id: str, event_type: str) -> CompiledSchema | None:
        return await self._schemas.get((tenant_id, event_type))

    def forget_bus(self, tenant_id: str, name: str) -> None:
        self._buses.forget((tenant_id, name))

    def forget_schema(self, tenant_id: str, event_type: str) -> None:
        self._schemas.forget((tenant_id, event_type))

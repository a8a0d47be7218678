"""Short-lived caches of what ingest needs per request: the bus (with its validation mode) and
the compiled schema of each event type, so the hot path does not query the control plane.

Changes made through this process take effect at once (`forget`); changes made by another process
take effect within `ttl` seconds.
"""

from __future__ import annotations

from stellwerk.refs import TenantId
from stellwerk.schemas import CompiledSchema, InvalidSchemaError, compile_schema
from stellwerk.storage.cache import TtlCache
from stellwerk.storage.control.store import BusRecord, ControlPlane


class BusDirectory:
    def __init__(self, control: ControlPlane, ttl: float = 5.0) -> None:
        async def load_bus(key: tuple[TenantId, str]) -> BusRecord | None:
            return await control.get_bus(*key)

        async def load_schema(key: tuple[TenantId, str]) -> CompiledSchema | None:
            record = await control.schemas.get(*key)
            if record is None:
                return None
            try:
                return compile_schema(record.document)
            except InvalidSchemaError:
                # Saved schemas were checked on save; one that a newer Stellwerk rejects acts
                # as absent rather than refusing every event of its type.
                return None

        self._buses: TtlCache[tuple[TenantId, str], BusRecord | None] = TtlCache(load_bus, ttl)
        self._schemas: TtlCache[tuple[TenantId, str], CompiledSchema | None] = TtlCache(
            load_schema, ttl
        )

    def held(self, tenant_id: TenantId, name: str) -> BusRecord | None:
        """The bus if the cache holds it (without a coroutine); None: ask `bus`."""
        return self._buses.fresh((tenant_id, name))

    async def bus(self, tenant_id: TenantId, name: str) -> BusRecord | None:
        key = (tenant_id, name)
        # A bus held is answered without the cache's coroutine (every ingest request asks).
        held = self._buses.fresh(key)
        return held if held is not None else await self._buses.get(key)

    async def schema(self, tenant_id: TenantId, event_type: str) -> CompiledSchema | None:
        return await self._schemas.get((tenant_id, event_type))

    def forget_bus(self, tenant_id: TenantId, name: str) -> None:
        self._buses.forget((tenant_id, name))

    def forget_schema(self, tenant_id: TenantId, event_type: str) -> None:
        self._schemas.forget((tenant_id, event_type))

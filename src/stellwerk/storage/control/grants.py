"""Bus grants: which other tenants may put events on a tenant's bus (through `bus` targets)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import sqlalchemy as sa

from stellwerk.refs import TenantId
from stellwerk.seams import Change
from stellwerk.storage.control.changes import ChangeFeed
from stellwerk.storage.control.tables import bus_grants, tenants


class GrantStore:
    def __init__(self, changes: ChangeFeed, now: Callable[[], datetime]) -> None:
        self._changes = changes
        self._engine = changes.engine
        self._now = now

    async def grant(self, tenant_id: TenantId, bus: str, grantee_id: str) -> bool:
        """Let `grantee_id` put events on the bus; returns whether the grant is new."""
        where = sa.and_(
            bus_grants.c.tenant_id == tenant_id,
            bus_grants.c.bus == bus,
            bus_grants.c.grantee_id == grantee_id,
        )
        async with self._engine.begin() as conn:
            if (await conn.execute(sa.select(bus_grants.c.bus).where(where))).first():
                return False
            await conn.execute(
                bus_grants.insert().values(
                    tenant_id=tenant_id, bus=bus, grantee_id=grantee_id, created_at=self._now()
                )
            )
        return True

    async def revoke(self, tenant_id: TenantId, bus: str, grantee_id: str) -> bool:
        where = sa.and_(
            bus_grants.c.tenant_id == tenant_id,
            bus_grants.c.bus == bus,
            bus_grants.c.grantee_id == grantee_id,
        )
        async with self._changes.begin() as conn:
            result = await conn.execute(bus_grants.delete().where(where))
            if result.rowcount > 0:
                # Bus access is cached by tenant names (the log's names for tenants).
                names = dict(
                    (
                        await conn.execute(
                            sa.select(tenants.c.id, tenants.c.name).where(
                                tenants.c.id.in_([tenant_id, grantee_id])
                            )
                        )
                    ).all()
                )
                self._changes.changed(Change.grant(names[tenant_id], bus, names[grantee_id]))
        return result.rowcount > 0

    async def grantees(self, tenant_id: TenantId, bus: str) -> list[str]:
        """Names of the tenants the bus is granted to."""
        query = (
            sa.select(tenants.c.name)
            .join(bus_grants, bus_grants.c.grantee_id == tenants.c.id)
            .where(bus_grants.c.tenant_id == tenant_id, bus_grants.c.bus == bus)
            .order_by(tenants.c.name)
        )
        async with self._engine.connect() as conn:
            return list((await conn.execute(query)).scalars())

    async def allowed(self, owner: str, bus: str, grantee: str) -> bool:
        """Whether tenant `grantee` (by name) may put events on `owner`'s (by name) bus."""
        owner_t = tenants.alias("owner")
        grantee_t = tenants.alias("grantee")
        query = (
            sa.select(bus_grants.c.bus)
            .join(owner_t, owner_t.c.id == bus_grants.c.tenant_id)
            .join(grantee_t, grantee_t.c.id == bus_grants.c.grantee_id)
            .where(owner_t.c.name == owner, grantee_t.c.name == grantee, bus_grants.c.bus == bus)
        )
        async with self._engine.connect() as conn:
            return (await conn.execute(query)).first() is not None

"""Connections: reusable authorization for HTTP targets, stored with their secrets sealed.

The stored form is the connection spec with every secret field encrypted and bound to its row
(`tenant/name`), so a sealed value copied into another row does not decrypt.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
import sqlalchemy as sa

from stellwerk.clock import as_utc
from stellwerk.refs import TenantId
from stellwerk.rules import ConnectionSpec, open_connection, seal_connection
from stellwerk.seams import Change
from stellwerk.storage.control.records import SealedStore
from stellwerk.storage.control.tables import connections


@dataclass(frozen=True, slots=True)
class ConnectionRecord:
    name: str
    spec: ConnectionSpec
    created_at: datetime
    updated_at: datetime


def _associated(tenant_id: TenantId, name: str) -> str:
    return f"connection:{tenant_id}/{name}"


class ConnectionStore(SealedStore):
    def _record(self, row: sa.Row[Any]) -> ConnectionRecord:
        stored = msgspec.json.decode(row.parameters)
        spec = open_connection(stored, self._secrets(), _associated(row.tenant_id, row.name))
        return ConnectionRecord(row.name, spec, as_utc(row.created_at), as_utc(row.updated_at))

    async def put(
        self, tenant_id: TenantId, name: str, spec: ConnectionSpec
    ) -> tuple[ConnectionRecord, bool]:
        sealed = seal_connection(spec, self._secrets(), _associated(tenant_id, name))
        now = self._now()
        where = sa.and_(connections.c.tenant_id == tenant_id, connections.c.name == name)
        values = {
            "kind": sealed["type"],
            "parameters": msgspec.json.encode(sealed).decode(),
            "updated_at": now,
        }
        async with self._changes.begin() as conn:
            exists = (await conn.execute(sa.select(connections.c.name).where(where))).first()
            if exists is None:
                await conn.execute(
                    connections.insert().values(
                        tenant_id=tenant_id, name=name, created_at=now, **values
                    )
                )
            else:
                await conn.execute(connections.update().where(where).values(**values))
            row = (await conn.execute(connections.select().where(where))).one()
            self._changes.changed(Change.of("rules", tenant_id))  # every rule that uses it
        return self._record(row), exists is None

    async def get(self, tenant_id: TenantId, name: str) -> ConnectionRecord | None:
        where = sa.and_(connections.c.tenant_id == tenant_id, connections.c.name == name)
        async with self._engine.connect() as conn:
            row = (await conn.execute(connections.select().where(where))).first()
        return self._record(row) if row else None

    async def for_tenant(self, tenant_id: TenantId) -> list[ConnectionRecord]:
        query = (
            connections.select()
            .where(connections.c.tenant_id == tenant_id)
            .order_by(connections.c.name)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [self._record(r) for r in rows]

    async def delete(self, tenant_id: TenantId, name: str) -> bool:
        where = sa.and_(connections.c.tenant_id == tenant_id, connections.c.name == name)
        async with self._changes.begin() as conn:
            result = await conn.execute(connections.delete().where(where))
            if result.rowcount > 0:
                self._changes.changed(Change.of("rules", tenant_id))
        return result.rowcount > 0

"""The schema registry: JSON Schemas per tenant and event type, in numbered versions.

Saving a schema identical to the latest version returns that version instead of adding one, so
deploy scripts can PUT the same schema again and again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
import sqlalchemy as sa

from stellwerk.clock import as_utc
from stellwerk.refs import TenantId
from stellwerk.seams import Change
from stellwerk.storage.control.changes import ChangeFeed
from stellwerk.storage.control.tables import schemas


@dataclass(frozen=True, slots=True)
class SchemaRecord:
    type: str
    version: int
    document: Any
    description: str
    created_at: datetime


def _record(row: sa.Row[Any]) -> SchemaRecord:
    return SchemaRecord(
        type=row.type,
        version=row.version,
        document=msgspec.json.decode(row.document),
        description=row.description,
        created_at=as_utc(row.created_at),
    )


class SchemaRegistry:
    def __init__(self, changes: ChangeFeed, now: Callable[[], datetime]) -> None:
        self._changes = changes
        self._engine = changes.engine
        self._now = now

    async def put(
        self, tenant_id: TenantId, type_: str, document: Any, description: str = ""
    ) -> tuple[SchemaRecord, bool]:
        """Add a version unless the latest one is the same; returns it and whether it is new."""
        encoded = msgspec.json.encode(document).decode()
        where = sa.and_(schemas.c.tenant_id == tenant_id, schemas.c.type == type_)
        async with self._changes.begin() as conn:
            latest = (
                await conn.execute(
                    schemas.select().where(where).order_by(schemas.c.version.desc()).limit(1)
                )
            ).first()
            if latest is not None and latest.document == encoded:
                return _record(latest), False
            version = 1 if latest is None else latest.version + 1
            now = self._now()
            await conn.execute(
                schemas.insert().values(
                    tenant_id=tenant_id,
                    type=type_,
                    version=version,
                    document=encoded,
                    description=description,
                    created_at=now,
                )
            )
            self._changes.changed(Change.of("schema", tenant_id, name=type_))
        return SchemaRecord(type_, version, document, description, now), True

    async def get(
        self, tenant_id: TenantId, type_: str, version: int | None = None
    ) -> SchemaRecord | None:
        """The given version, or the latest one."""
        query = schemas.select().where(schemas.c.tenant_id == tenant_id, schemas.c.type == type_)
        if version is None:
            query = query.order_by(schemas.c.version.desc()).limit(1)
        else:
            query = query.where(schemas.c.version == version)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return _record(row) if row else None

    async def versions(self, tenant_id: TenantId, type_: str) -> list[SchemaRecord]:
        query = (
            schemas.select()
            .where(schemas.c.tenant_id == tenant_id, schemas.c.type == type_)
            .order_by(schemas.c.version)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_record(r) for r in rows]

    async def latest_of_each(self, tenant_id: TenantId) -> list[SchemaRecord]:
        newest = (
            sa.select(schemas.c.type, sa.func.max(schemas.c.version).label("version"))
            .where(schemas.c.tenant_id == tenant_id)
            .group_by(schemas.c.type)
            .subquery()
        )
        query = (
            schemas.select()
            .join(
                newest,
                sa.and_(schemas.c.type == newest.c.type, schemas.c.version == newest.c.version),
            )
            .where(schemas.c.tenant_id == tenant_id)
            .order_by(schemas.c.type)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_record(r) for r in rows]

    async def delete(self, tenant_id: TenantId, type_: str, version: int | None = None) -> int:
        """Delete one version or all of them; returns how many went."""
        query = schemas.delete().where(schemas.c.tenant_id == tenant_id, schemas.c.type == type_)
        if version is not None:
            query = query.where(schemas.c.version == version)
        async with self._changes.begin() as conn:
            result = await conn.execute(query)
            if result.rowcount:
                self._changes.changed(Change.of("schema", tenant_id, name=type_))
        return result.rowcount

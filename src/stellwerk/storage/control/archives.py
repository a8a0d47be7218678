"""Archive definitions of a tenant's buses: pattern, retention, and where on the log they begin.

An archive's events live in the archive store under its `uid`; the record here says which events
belong in it: those of its bus above `start_position`. An archive is created with the bus's last
log position then and `taken` false. The archiver that follows the bus takes it in (`take`)
before its next batch: if that archiver had already looked past the start (it runs in another
process and heard of the archive late), the start moves up to where it had got, so that the
archive never claims events nobody copied into it. An update changes the pattern, retention and
description, never the uid, the start or `taken`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
import sqlalchemy as sa

from stellwerk.clock import as_utc
from stellwerk.refs import TenantId, TenantName
from stellwerk.seams import Change
from stellwerk.storage.control.changes import ChangeFeed
from stellwerk.storage.control.records import ConflictError
from stellwerk.storage.control.tables import archives, tenants


@dataclass(frozen=True, slots=True)
class ArchiveRecord:
    tenant_id: TenantId
    bus: str
    name: str
    uid: str
    pattern: dict[str, Any] | None  # None: every event of the bus
    retention_days: int  # 0: forever
    description: str
    start_position: int
    created_at: datetime
    updated_at: datetime
    taken: bool  # by the archiver of its bus: from then on, every event above the start is in


def _record(row: sa.Row[Any]) -> ArchiveRecord:
    return ArchiveRecord(
        tenant_id=row.tenant_id,
        bus=row.bus,
        name=row.name,
        uid=row.uid,
        pattern=None if row.pattern is None else msgspec.json.decode(row.pattern),
        retention_days=int(row.retention_days),
        description=row.description,
        start_position=int(row.start_position),
        created_at=as_utc(row.created_at),
        updated_at=as_utc(row.updated_at),
        taken=bool(row.taken),
    )


class ArchiveRecordStore:
    def __init__(self, changes: ChangeFeed, now: Callable[[], datetime]) -> None:
        self._changes = changes
        self._engine = changes.engine
        self._now = now

    async def put(
        self,
        tenant_id: TenantId,
        bus: str,
        name: str,
        *,
        pattern: Mapping[str, Any] | None,
        retention_days: int,
        description: str,
        start_position: int,
        max_archives: int,
    ) -> tuple[ArchiveRecord, bool]:
        """Create an archive starting after `start_position`, or update one; say if created."""
        if retention_days < 0:
            raise ValueError("retention_days must be 0 (forever) or more")
        now = self._now()
        where = sa.and_(
            archives.c.tenant_id == tenant_id, archives.c.bus == bus, archives.c.name == name
        )
        values = {
            "pattern": None if pattern is None else msgspec.json.encode(pattern).decode(),
            "retention_days": retention_days,
            "description": description,
            "updated_at": now,
        }
        async with self._changes.begin() as conn:
            existing = (await conn.execute(sa.select(archives.c.uid).where(where))).first()
            if existing is None:
                count = await conn.scalar(
                    sa.select(sa.func.count())
                    .select_from(archives)
                    .where(archives.c.tenant_id == tenant_id, archives.c.bus == bus)
                )
                if (count or 0) >= max_archives:
                    raise ConflictError(
                        f"the bus already has {count} archives (limit {max_archives})"
                    )
                await conn.execute(
                    archives.insert().values(
                        tenant_id=tenant_id,
                        bus=bus,
                        name=name,
                        uid=str(uuid.uuid4()),
                        start_position=start_position,
                        taken=False,
                        created_at=now,
                        **values,
                    )
                )
            else:
                await conn.execute(archives.update().where(where).values(**values))
            row = (await conn.execute(archives.select().where(where))).one()
            self._changes.changed(Change.of("archive", tenant_id, bus))
        return _record(row), existing is None

    async def take(self, uid: str, cursor: int) -> ArchiveRecord | None:
        """The archiver whose cursor on the archive's bus is `cursor` takes the archive in.

        The start becomes `cursor` if that is higher: the events up to it were looked at
        without this archive. Only the first take changes anything; every take returns the
        record as it now is (None: the archive was deleted).
        """
        start = archives.c.start_position
        async with self._engine.begin() as conn:
            await conn.execute(
                archives.update()
                .where(archives.c.uid == uid, archives.c.taken == sa.false())
                .values(taken=True, start_position=sa.case((start < cursor, cursor), else_=start))
            )
            row = (await conn.execute(archives.select().where(archives.c.uid == uid))).first()
        return _record(row) if row else None

    async def get(self, tenant_id: TenantId, bus: str, name: str) -> ArchiveRecord | None:
        where = sa.and_(
            archives.c.tenant_id == tenant_id, archives.c.bus == bus, archives.c.name == name
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(archives.select().where(where))).first()
        return _record(row) if row else None

    async def for_bus(self, tenant_id: TenantId, bus: str) -> list[ArchiveRecord]:
        query = (
            archives.select()
            .where(archives.c.tenant_id == tenant_id, archives.c.bus == bus)
            .order_by(archives.c.name)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_record(r) for r in rows]

    async def everything(self) -> list[tuple[TenantName, ArchiveRecord]]:
        """Every archive of every tenant with its tenant's name (the log's name for it)."""
        query = (
            sa.select(archives, tenants.c.name.label("tenant_name"))
            .join(tenants, tenants.c.id == archives.c.tenant_id)
            .order_by(tenants.c.name, archives.c.bus, archives.c.name)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [(row.tenant_name, _record(row)) for row in rows]

    async def delete(self, tenant_id: TenantId, bus: str, name: str) -> ArchiveRecord | None:
        """Remove the definition; return it (its uid names the events to drop), or None."""
        where = sa.and_(
            archives.c.tenant_id == tenant_id, archives.c.bus == bus, archives.c.name == name
        )
        async with self._changes.begin() as conn:
            row = (await conn.execute(archives.select().where(where))).first()
            if row is None:
                return None
            await conn.execute(archives.delete().where(where))
            self._changes.changed(Change.of("archive", tenant_id, bus))
        return _record(row)

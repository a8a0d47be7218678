"""The failed-events store: events a bus refused (schema validation) kept with their reasons.

Nothing a producer sent is silently dropped: an event that fails validation in `enforce` mode is
written here before the request is answered, can be listed and filtered, and re-submitted to its
bus once the schema or the event is fixed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from stellwerk.clock import as_utc
from stellwerk.refs import TenantId
from stellwerk.storage.control.tables import failed_events

_ERASE_PAGE: Final = 500


@dataclass(frozen=True, slots=True)
class NewFailedEvent:
    bus: str
    event_id: str
    source: str
    type: str
    reason: str
    errors: list[dict[str, str]]
    body: bytes


@dataclass(frozen=True, slots=True)
class FailedEventRecord:
    id: int
    bus: str
    event_id: str
    source: str
    type: str
    reason: str
    errors: list[dict[str, str]]
    body: bytes
    received_at: datetime
    resubmitted_at: datetime | None


@dataclass(frozen=True, slots=True)
class FailedEventFilter:
    type: str | None = None
    event_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    include_resubmitted: bool = False


def _record(row: sa.Row[Any]) -> FailedEventRecord:
    return FailedEventRecord(
        id=row.id,
        bus=row.bus,
        event_id=row.event_id,
        source=row.source,
        type=row.type,
        reason=row.reason,
        errors=msgspec.json.decode(row.errors),
        body=bytes(row.body),
        received_at=as_utc(row.received_at),
        resubmitted_at=as_utc(row.resubmitted_at) if row.resubmitted_at else None,
    )


class FailedEventStore:
    def __init__(self, engine: AsyncEngine, now: Callable[[], datetime]) -> None:
        self._engine = engine
        self._now = now

    async def add(self, tenant_id: TenantId, events: Sequence[NewFailedEvent]) -> list[int]:
        """Store refused events durably (committed on return); returns their ids in order."""
        now = self._now()
        ids = []
        async with self._engine.begin() as conn:
            for event in events:
                result = await conn.execute(
                    failed_events.insert()
                    .values(
                        tenant_id=tenant_id,
                        bus=event.bus,
                        event_id=event.event_id,
                        source=event.source,
                        type=event.type,
                        reason=event.reason,
                        errors=msgspec.json.encode(event.errors).decode(),
                        body=event.body,
                        received_at=now,
                    )
                    .returning(failed_events.c.id)
                )
                ids.append(int(result.scalar_one()))
        return ids

    async def find(
        self,
        tenant_id: TenantId,
        bus: str,
        where: FailedEventFilter,
        *,
        after: int = 0,
        limit: int = 100,
    ) -> list[FailedEventRecord]:
        c = failed_events.c
        query = failed_events.select().where(c.tenant_id == tenant_id, c.bus == bus, c.id > after)
        if where.type is not None:
            query = query.where(c.type == where.type)
        if where.event_id is not None:
            query = query.where(c.event_id == where.event_id)
        if where.since is not None:
            query = query.where(c.received_at >= where.since)
        if where.until is not None:
            query = query.where(c.received_at < where.until)
        if not where.include_resubmitted:
            query = query.where(c.resubmitted_at.is_(None))
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query.order_by(c.id).limit(limit))).all()
        return [_record(r) for r in rows]

    async def get(
        self, tenant_id: TenantId, bus: str, ids: Sequence[int]
    ) -> list[FailedEventRecord]:
        c = failed_events.c
        query = (
            failed_events.select()
            .where(c.tenant_id == tenant_id, c.bus == bus, c.id.in_(list(ids)))
            .order_by(c.id)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_record(r) for r in rows]

    async def mark_resubmitted(self, tenant_id: TenantId, ids: Sequence[int]) -> None:
        c = failed_events.c
        async with self._engine.begin() as conn:
            await conn.execute(
                failed_events.update()
                .where(c.tenant_id == tenant_id, c.id.in_(list(ids)))
                .values(resubmitted_at=self._now())
            )

    async def update_errors(
        self, tenant_id: TenantId, id_: int, errors: list[dict[str, str]]
    ) -> None:
        c = failed_events.c
        async with self._engine.begin() as conn:
            await conn.execute(
                failed_events.update()
                .where(c.tenant_id == tenant_id, c.id == id_)
                .values(errors=msgspec.json.encode(errors).decode())
            )

    async def delete(self, tenant_id: TenantId, bus: str, id_: int) -> bool:
        c = failed_events.c
        async with self._engine.begin() as conn:
            result = await conn.execute(
                failed_events.delete().where(c.tenant_id == tenant_id, c.bus == bus, c.id == id_)
            )
        return result.rowcount > 0

    async def erase(
        self, tenant_id: TenantId, bus: str | None, needle: bytes, matches: Callable[[bytes], bool]
    ) -> list[FailedEventRecord]:
        """Remove the tenant's failed events (of `bus`, or all) whose body `matches`; return them.

        Only bodies that contain `needle` are offered to `matches`. A page at a time, so the
        database is never held for long; on SQLite with `secure_delete`, so the bytes go too.
        """
        c = failed_events.c
        erased: list[FailedEventRecord] = []
        after = 0
        while True:
            query = failed_events.select().where(c.tenant_id == tenant_id, c.id > after)
            if bus is not None:
                query = query.where(c.bus == bus)
            async with self._engine.connect() as conn:
                rows = (await conn.execute(query.order_by(c.id).limit(_ERASE_PAGE))).all()
            if not rows:
                return erased
            after = rows[-1].id
            found = [_record(r) for r in rows if needle in bytes(r.body) and matches(bytes(r.body))]
            if not found:
                continue
            async with self._engine.begin() as conn:
                if conn.dialect.name == "sqlite":
                    await conn.exec_driver_sql("PRAGMA secure_delete = ON")
                await conn.execute(
                    failed_events.delete().where(
                        c.tenant_id == tenant_id, c.id.in_([r.id for r in found])
                    )
                )
            erased.extend(found)

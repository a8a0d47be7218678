"""Erasure records: the audit trail of erasures, and the events they keep out (suppressions).

An audit entry is written before an erasure touches anything and finished with the counts per
store once it is done, so every erasure, even one cut short by a crash, leaves a record; the
runner resumes entries still `running` when the process starts. A suppression names an erased
event by (bus, source, id): ingest answers such an event as accepted and does not store it.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from stellwerk.clock import as_utc
from stellwerk.refs import TenantId, TenantName
from stellwerk.seams import Change
from stellwerk.storage.control.changes import ChangeFeed
from stellwerk.storage.control.tables import erasures, suppressed_events, tenants

_CHUNK: Final = 500  # rows per statement: well below every database's parameter limit


class ErasureState(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class ErasureRecord:
    id: str
    tenant_id: TenantId
    bus: str | None  # None: every bus of the tenant
    criterion: dict[str, Any]
    suppress: bool
    state: ErasureState
    counts: dict[str, int]  # events erased so far, per store
    error: str | None
    requested_by: str | None  # the API key's id
    requested_at: datetime
    finished_at: datetime | None


def _record(row: sa.Row[Any]) -> ErasureRecord:
    return ErasureRecord(
        id=row.id,
        tenant_id=row.tenant_id,
        bus=row.bus,
        criterion=msgspec.json.decode(row.criterion),
        suppress=bool(row.suppress),
        state=ErasureState(row.state),
        counts=msgspec.json.decode(row.counts) if row.counts else {},
        error=row.error,
        requested_by=row.requested_by,
        requested_at=as_utc(row.requested_at),
        finished_at=as_utc(row.finished_at) if row.finished_at else None,
    )


class ErasureStore:
    def __init__(self, changes: ChangeFeed, now: Callable[[], datetime]) -> None:
        self._changes = changes
        self._engine = changes.engine
        self._now = now

    # audit entries ---------------------------------------------------------------------------

    async def create(
        self,
        tenant_id: TenantId,
        *,
        bus: str | None,
        criterion: Mapping[str, Any],
        suppress: bool,
        requested_by: str | None,
    ) -> ErasureRecord:
        """Record an erasure as `running`, before any of it happens."""
        record = ErasureRecord(
            id=str(uuid.uuid4()),
            tenant_id=tenant_id,
            bus=bus,
            criterion=dict(criterion),
            suppress=suppress,
            state=ErasureState.RUNNING,
            counts={},
            error=None,
            requested_by=requested_by,
            requested_at=self._now(),
            finished_at=None,
        )
        async with self._engine.begin() as conn:
            await conn.execute(
                erasures.insert().values(
                    id=record.id,
                    tenant_id=tenant_id,
                    bus=bus,
                    criterion=msgspec.json.encode(record.criterion).decode(),
                    suppress=suppress,
                    state=str(record.state),
                    requested_by=requested_by,
                    requested_at=record.requested_at,
                )
            )
        return record

    async def get(self, tenant_id: TenantId, erasure_id: str) -> ErasureRecord | None:
        query = erasures.select().where(
            erasures.c.tenant_id == tenant_id, erasures.c.id == erasure_id
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return _record(row) if row else None

    async def recent(
        self, tenant_id: TenantId, *, before: str | None = None, limit: int = 100
    ) -> list[ErasureRecord]:
        """The tenant's erasures, newest first; page on with the last id as `before`."""
        c = erasures.c
        query = erasures.select().where(c.tenant_id == tenant_id)
        async with self._engine.connect() as conn:
            if before is not None:
                last = await self._requested_at(conn, tenant_id, before)
                if last is None:
                    return []
                query = query.where(
                    sa.or_(c.requested_at < last, sa.and_(c.requested_at == last, c.id < before))
                )
            query = query.order_by(c.requested_at.desc(), c.id.desc()).limit(limit)
            rows = (await conn.execute(query)).all()
        return [_record(r) for r in rows]

    @staticmethod
    async def _requested_at(
        conn: AsyncConnection, tenant_id: TenantId, erasure_id: str
    ) -> datetime | None:
        found: datetime | None = await conn.scalar(
            sa.select(erasures.c.requested_at).where(
                erasures.c.tenant_id == tenant_id, erasures.c.id == erasure_id
            )
        )
        return found

    async def record_counts(self, erasure_id: str, counts: Mapping[str, int]) -> None:
        """Progress: the events erased so far, per store."""
        async with self._engine.begin() as conn:
            await conn.execute(
                erasures.update()
                .where(erasures.c.id == erasure_id)
                .values(counts=msgspec.json.encode(dict(counts)).decode())
            )

    async def finish(
        self,
        erasure_id: str,
        state: ErasureState,
        counts: Mapping[str, int],
        error: str | None = None,
    ) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                erasures.update()
                .where(erasures.c.id == erasure_id)
                .values(
                    state=str(state),
                    counts=msgspec.json.encode(dict(counts)).decode(),
                    error=error,
                    finished_at=self._now(),
                )
            )

    async def unfinished(self) -> list[tuple[TenantName, ErasureRecord]]:
        """Every erasure still `running` (cut short by a stop), with its tenant's name."""
        query = (
            sa.select(erasures, tenants.c.name.label("tenant_name"))
            .join(tenants, tenants.c.id == erasures.c.tenant_id)
            .where(erasures.c.state == str(ErasureState.RUNNING))
            .order_by(erasures.c.requested_at)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [(row.tenant_name, _record(row)) for row in rows]

    # suppressions ----------------------------------------------------------------------------

    async def suppress(
        self, tenant_id: TenantId, erasure_id: str, keys: Iterable[tuple[str, str, str]]
    ) -> None:
        """Keep these `(bus, source, id)` out from now on; a key kept out already stays as is."""
        now = self._now()
        keys = list(dict.fromkeys(keys))
        rows = [
            {
                "tenant_id": tenant_id,
                "bus": bus,
                "key_hash": suppression_hash(source, event_id),
                "source": source,
                "event_id": event_id,
                "erasure_id": erasure_id,
                "created_at": now,
            }
            for bus, source, event_id in keys
        ]
        if not rows:
            return
        async with self._changes.begin() as conn:
            insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
            statement = insert(suppressed_events).on_conflict_do_nothing()
            for start in range(0, len(rows), _CHUNK):
                await conn.execute(statement, rows[start : start + _CHUNK])
            for bus in sorted({bus for bus, _, _ in keys}):
                self._changes.changed(Change.of("suppression", tenant_id, bus))

    async def suppressed(
        self, tenant_id: TenantId, bus: str, keys: Sequence[tuple[str, str]]
    ) -> set[tuple[str, str]]:
        """Which of these `(source, id)` keys are kept out of the bus."""
        c = suppressed_events.c
        found: set[tuple[str, str]] = set()
        wanted = {
            suppression_hash(source, event_id): (source, event_id) for source, event_id in keys
        }
        hashes = list(wanted)
        async with self._engine.connect() as conn:
            for start in range(0, len(hashes), _CHUNK):
                query = sa.select(c.key_hash, c.source, c.event_id).where(
                    c.tenant_id == tenant_id,
                    c.bus == bus,
                    c.key_hash.in_(hashes[start : start + _CHUNK]),
                )
                for row in await conn.execute(query):
                    key = (row.source, row.event_id)
                    if wanted.get(row.key_hash) == key:
                        found.add(key)
        return found

    async def has_suppressions(self, tenant_id: TenantId, bus: str) -> bool:
        c = suppressed_events.c
        query = (
            sa.select(sa.literal(1))
            .select_from(suppressed_events)
            .where(c.tenant_id == tenant_id, c.bus == bus)
            .limit(1)
        )
        async with self._engine.connect() as conn:
            return (await conn.scalar(query)) is not None


def suppression_hash(source: str, event_id: str) -> str:
    """The key of a suppression: SHA-256 (hex) of source and id, unambiguously joined."""
    digest = hashlib.sha256()
    for part in (source, event_id):
        encoded = part.encode()
        digest.update(len(encoded).to_bytes(8, "big"))
        digest.update(encoded)
    return digest.hexdigest()

"""Replay records: what a replay re-sends, its state and its progress, per tenant.

The control plane is where a replay's state is decided, so that the API (which creates and
cancels) and the replay runner (which starts, advances and finishes) agree across processes:
every change of state is a conditional update from the states it may leave, and whoever comes
second finds the row changed and does nothing. A replay holds one of `max_concurrent` slots while
`running`; `create` and `promote` fill free slots in creation order, the rest wait as `queued`.

`replayed` here is written now and then while a replay runs; the exact count lives with the
replay's cursor in the delivery queue (`DeliveryQueue.replay_cursor`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from stellwerk.clock import as_utc
from stellwerk.refs import TenantId, TenantName
from stellwerk.seams import Change
from stellwerk.storage.control.changes import ChangeFeed
from stellwerk.storage.control.records import ConflictError
from stellwerk.storage.control.tables import replays, tenants

ReplayState = Literal["queued", "running", "completed", "cancelled", "failed"]
ACTIVE: Final[tuple[ReplayState, ...]] = ("queued", "running")
FINISHED: Final[tuple[ReplayState, ...]] = ("completed", "cancelled", "failed")


@dataclass(frozen=True, slots=True)
class NewReplay:
    """A replay as asked for: re-send `archive`'s events recorded in `[start, end)` to `rules`."""

    name: str
    bus: str
    archive: str
    archive_uid: str
    start: datetime
    end: datetime
    rules: Sequence[str] | None = None  # None: every rule of the bus
    description: str = ""


@dataclass(frozen=True, slots=True)
class ReplayRecord:
    tenant_id: TenantId
    name: str
    bus: str
    archive: str
    archive_uid: str
    start: datetime
    end: datetime
    rules: list[str] | None
    description: str
    state: ReplayState
    total: int
    replayed: int
    error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


def _record(row: sa.Row[Any]) -> ReplayRecord:
    return ReplayRecord(
        tenant_id=row.tenant_id,
        name=row.name,
        bus=row.bus,
        archive=row.archive,
        archive_uid=row.archive_uid,
        start=as_utc(row.window_start),
        end=as_utc(row.window_end),
        rules=None if row.rules is None else msgspec.json.decode(row.rules, type=list[str]),
        description=row.description,
        state=row.state,
        total=int(row.total),
        replayed=int(row.replayed),
        error=row.error,
        created_at=as_utc(row.created_at),
        updated_at=as_utc(row.updated_at),
        finished_at=as_utc(row.finished_at) if row.finished_at else None,
    )


def _key(tenant_id: TenantId, name: str) -> sa.ColumnElement[bool]:
    return sa.and_(replays.c.tenant_id == tenant_id, replays.c.name == name)


async def _lock(conn: AsyncConnection) -> None:
    """Count running replays and change their number in one step, also beside other processes.

    SQLite transactions here begin IMMEDIATE (the write lock up front) already; PostgreSQL needs
    the table locked against concurrent writers, or two creates could both take the last slot.
    """
    if conn.dialect.name == "postgresql":
        await conn.execute(sa.text("LOCK TABLE replays IN SHARE ROW EXCLUSIVE MODE"))


class ReplayStore:
    def __init__(self, changes: ChangeFeed, now: Callable[[], datetime]) -> None:
        self._changes = changes
        self._engine = changes.engine
        self._now = now

    async def create(
        self, tenant_id: TenantId, new: NewReplay, *, max_running: int
    ) -> ReplayRecord:
        """Record a replay: `running` if one of the `max_running` slots is free, else `queued`.

        Raises `ConflictError` if the tenant has a replay of that name already (names are never
        reused: a replay's cursor stays with its name).
        """
        now = self._now()
        async with self._changes.begin() as conn:
            await _lock(conn)
            taken = await conn.execute(sa.select(replays.c.name).where(_key(tenant_id, new.name)))
            if taken.first():
                raise ConflictError(f"replay {new.name!r} already exists")
            running = await self._running(conn)
            await conn.execute(
                replays.insert().values(
                    tenant_id=tenant_id,
                    name=new.name,
                    bus=new.bus,
                    archive=new.archive,
                    archive_uid=new.archive_uid,
                    window_start=new.start,
                    window_end=new.end,
                    rules=None if new.rules is None else msgspec.json.encode(new.rules).decode(),
                    description=new.description,
                    state="running" if running < max_running else "queued",
                    created_at=now,
                    updated_at=now,
                )
            )
            row = (await conn.execute(replays.select().where(_key(tenant_id, new.name)))).one()
            self._changes.changed(Change.of("replay", tenant_id))
        return _record(row)

    async def get(self, tenant_id: TenantId, name: str) -> ReplayRecord | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(replays.select().where(_key(tenant_id, name)))).first()
        return _record(row) if row else None

    async def for_tenant(
        self, tenant_id: TenantId, *, state: ReplayState | None = None, limit: int = 1000
    ) -> list[ReplayRecord]:
        """The tenant's replays, newest first."""
        query = replays.select().where(replays.c.tenant_id == tenant_id)
        if state is not None:
            query = query.where(replays.c.state == state)
        query = query.order_by(replays.c.created_at.desc(), replays.c.name).limit(limit)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_record(r) for r in rows]

    async def cancel(self, tenant_id: TenantId, name: str) -> ReplayRecord | None:
        """Cancel a queued or running replay; return it as it is now (None: no such replay).

        A replay that finished already stays as it is; the caller sees its state.
        """
        now = self._now()
        async with self._changes.begin() as conn:
            await conn.execute(
                replays.update()
                .where(_key(tenant_id, name), replays.c.state.in_(ACTIVE))
                .values(state="cancelled", updated_at=now, finished_at=now)
            )
            row = (await conn.execute(replays.select().where(_key(tenant_id, name)))).first()
            if row is not None and row.state == "cancelled":
                self._changes.changed(Change.of("replay_cancelled", tenant_id, name=name))
        return _record(row) if row else None

    # -- the replay runner's side: across tenants ------------------------------------------

    async def promote(self, max_running: int) -> int:
        """Start queued replays, oldest first, while fewer than `max_running` run; say how many."""
        async with self._engine.begin() as conn:
            await _lock(conn)
            free = max_running - await self._running(conn)
            if free <= 0:
                return 0
            waiting = (
                await conn.execute(
                    sa.select(replays.c.tenant_id, replays.c.name)
                    .where(replays.c.state == "queued")
                    .order_by(replays.c.created_at, replays.c.name)
                    .limit(free)
                )
            ).all()
            now = self._now()
            for tenant_id, name in waiting:
                await conn.execute(
                    replays.update()
                    .where(_key(tenant_id, name), replays.c.state == "queued")
                    .values(state="running", updated_at=now)
                )
        return len(waiting)

    async def running(self) -> list[tuple[TenantName, ReplayRecord]]:
        """Every running replay with its tenant's name, oldest first."""
        query = (
            sa.select(replays, tenants.c.name.label("tenant_name"))
            .join(tenants, tenants.c.id == replays.c.tenant_id)
            .where(replays.c.state == "running")
            .order_by(replays.c.created_at, replays.c.name)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [(row.tenant_name, _record(row)) for row in rows]

    async def progress(
        self, tenant_id: TenantId, name: str, *, replayed: int, total: int | None = None
    ) -> ReplayState | None:
        """Note progress of a running replay; return its state (None: gone).

        The runner learns this way, at every progress note, that a replay was cancelled
        elsewhere (another process's API).
        """
        values: dict[str, Any] = {"replayed": replayed, "updated_at": self._now()}
        if total is not None:
            values["total"] = total
        async with self._engine.begin() as conn:
            await conn.execute(
                replays.update()
                .where(_key(tenant_id, name), replays.c.state == "running")
                .values(**values)
            )
            state: ReplayState | None = await conn.scalar(
                sa.select(replays.c.state).where(_key(tenant_id, name))
            )
        return state

    async def finish(
        self,
        tenant_id: TenantId,
        name: str,
        state: Literal["completed", "failed"],
        *,
        replayed: int,
        error: str | None = None,
    ) -> bool:
        """End a running replay; False if it was not running any more (cancelled meanwhile)."""
        now = self._now()
        async with self._engine.begin() as conn:
            result = await conn.execute(
                replays.update()
                .where(_key(tenant_id, name), replays.c.state == "running")
                .values(
                    state=state, replayed=replayed, error=error, updated_at=now, finished_at=now
                )
            )
        return result.rowcount > 0

    @staticmethod
    async def _running(conn: AsyncConnection) -> int:
        count = await conn.scalar(
            sa.select(sa.func.count()).select_from(replays).where(replays.c.state == "running")
        )
        return int(count or 0)

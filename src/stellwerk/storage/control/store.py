"""The control plane store on SQLAlchemy Core: every tenant-owned query filters by `tenant_id`."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from stellwerk.auth import Scope, generate_key, hash_key
from stellwerk.clock import as_utc, utc_now
from stellwerk.names import check_name
from stellwerk.refs import TenantId, TenantName, TenantRef
from stellwerk.seams import Change
from stellwerk.secrets import SecretBox
from stellwerk.storage.control import migrate
from stellwerk.storage.control.archives import ArchiveRecordStore
from stellwerk.storage.control.changes import ChangeFeed
from stellwerk.storage.control.connections import ConnectionStore
from stellwerk.storage.control.erasures import ErasureStore
from stellwerk.storage.control.failed import FailedEventStore
from stellwerk.storage.control.grants import GrantStore
from stellwerk.storage.control.limits import LimitStore, tenant_limit
from stellwerk.storage.control.records import ConflictError, NotFoundError
from stellwerk.storage.control.replays import ReplayStore
from stellwerk.storage.control.rules import RuleStore
from stellwerk.storage.control.schemas import SchemaRegistry
from stellwerk.storage.control.tables import api_keys, buses, tenants

DEFAULT_BUS = "default"
VALIDATION_MODES = ("off", "warn", "enforce")
DEFAULT_TENANT = "default"


@dataclass(frozen=True, slots=True)
class TenantRecord:
    id: TenantId
    name: TenantName
    created_at: datetime

    @property
    def ref(self) -> TenantRef:
        return TenantRef(self.id, self.name)


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    id: str
    tenant_id: TenantId
    scope: Scope
    key_hash: str
    description: str
    created_at: datetime
    revoked_at: datetime | None
    # The key itself, sealed (`ControlPlane.open_sealed_key`); None for a key without one.
    sealed_key: str | None = None


@dataclass(frozen=True, slots=True)
class BusRecord:
    tenant_id: TenantId
    name: str
    description: str
    created_at: datetime
    updated_at: datetime
    schema_validation: str = "off"


def _tenant(row: sa.Row[Any]) -> TenantRecord:
    return TenantRecord(id=row.id, name=row.name, created_at=as_utc(row.created_at))


def _key(row: sa.Row[Any]) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row.id,
        tenant_id=row.tenant_id,
        scope=Scope(row.scope),
        key_hash=row.key_hash,
        description=row.description,
        created_at=as_utc(row.created_at),
        revoked_at=as_utc(row.revoked_at) if row.revoked_at else None,
        sealed_key=row.sealed_key,
    )


def _bus(row: sa.Row[Any]) -> BusRecord:
    return BusRecord(
        tenant_id=row.tenant_id,
        name=row.name,
        description=row.description,
        created_at=as_utc(row.created_at),
        updated_at=as_utc(row.updated_at),
        schema_validation=row.schema_validation,
    )


def _key_binding(key_id: str) -> str:
    """What a sealed key is bound to: its row, so a copy moved to another row does not open."""
    return f"api_keys/{key_id}"


def create_engine(url: str) -> AsyncEngine:
    """An async engine for the control plane; SQLite gets WAL and waits for locks, not fails."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_async_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself (below) instead of the driver's implicit transactions.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        # IMMEDIATE takes the write lock up front, so a read-then-write transaction next to another
        # process (the CLI beside a running server) waits for the lock instead of failing.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class ControlPlane:
    """Tenants, keys and buses. Construct with `await ControlPlane.open(url)`."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        clock: Callable[[], datetime] | None = None,
        box: SecretBox | None = None,
    ) -> None:
        self._engine = engine
        self._now = clock or utc_now
        self._box = box
        # Every write that others cache is announced here once it commits (`listen`).
        self.changes = ChangeFeed(engine)
        changes = self.changes
        self.rules = RuleStore(changes, self._now, box)
        self.connections = ConnectionStore(changes, self._now, box)
        self.grants = GrantStore(changes, self._now)
        self.schemas = SchemaRegistry(changes, self._now)
        self.failed_events = FailedEventStore(engine, self._now)
        self.replays = ReplayStore(changes, self._now)
        self.archives = ArchiveRecordStore(changes, self._now)
        self.erasures = ErasureStore(changes, self._now)
        self.limits = LimitStore(changes, self._now)

    @classmethod
    async def open(
        cls, url: str, *, run_migrations: bool = True, box: SecretBox | None = None
    ) -> ControlPlane:
        engine = create_engine(url)
        if run_migrations:
            await migrate.upgrade(engine)
        return cls(engine, box=box)

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    async def close(self) -> None:
        await self._engine.dispose()

    async def ping(self) -> None:
        async with self._engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    # tenants -------------------------------------------------------------------------------

    async def create_tenant(self, name: str) -> TenantRecord:
        check_name("tenant", name)
        now = self._now()
        record = TenantRecord(TenantId(str(uuid.uuid4())), TenantName(name), created_at=now)
        async with self._engine.begin() as conn:
            if await self._tenant_row(conn, name) is not None:
                raise ConflictError(f"tenant {name!r} already exists")
            await conn.execute(tenants.insert().values(id=record.id, name=name, created_at=now))
            await conn.execute(
                buses.insert().values(
                    tenant_id=record.id, name=DEFAULT_BUS, created_at=now, updated_at=now
                )
            )
        return record

    async def get_tenant(self, name: str) -> TenantRecord | None:
        async with self._engine.connect() as conn:
            row = await self._tenant_row(conn, name)
        return _tenant(row) if row else None

    async def list_tenants(self) -> list[TenantRecord]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(tenants.select().order_by(tenants.c.name))).all()
        return [_tenant(r) for r in rows]

    @staticmethod
    async def _tenant_row(conn: AsyncConnection, name: str) -> sa.Row[Any] | None:
        return (await conn.execute(tenants.select().where(tenants.c.name == name))).first()

    # API keys ------------------------------------------------------------------------------

    async def create_key(
        self, tenant_id: TenantId, scope: Scope, description: str = ""
    ) -> tuple[ApiKeyRecord, str]:
        """A new key for the tenant; returns the record and the key text. Only its digest is
        stored in the clear; with the process's secret key, a sealed copy too (request signing)."""
        key_id, key = generate_key()
        record = ApiKeyRecord(
            id=key_id,
            tenant_id=tenant_id,
            scope=scope,
            key_hash=hash_key(key),
            description=description,
            created_at=self._now(),
            revoked_at=None,
            sealed_key=None if self._box is None else self._box.encrypt(key, _key_binding(key_id)),
        )
        async with self._engine.begin() as conn:
            exists = await conn.execute(sa.select(tenants.c.id).where(tenants.c.id == tenant_id))
            if exists.first() is None:
                raise NotFoundError("tenant does not exist")
            await conn.execute(
                api_keys.insert().values(
                    id=record.id,
                    tenant_id=tenant_id,
                    scope=str(scope),
                    key_hash=record.key_hash,
                    description=description,
                    created_at=record.created_at,
                    sealed_key=record.sealed_key,
                )
            )
        return record, key

    def open_sealed_key(self, record: ApiKeyRecord) -> str | None:
        """The key's text from its sealed copy; None when it has none or no secret key is here.
        Raises `DecryptionError` for a copy another secret key sealed."""
        if record.sealed_key is None or self._box is None:
            return None
        return self._box.decrypt(record.sealed_key, _key_binding(record.id))

    async def find_key(self, key_id: str) -> tuple[ApiKeyRecord, TenantRecord] | None:
        """The key with this id and its tenant, revoked or not; authentication decides."""
        query = (
            sa.select(
                api_keys, tenants.c.name.label("tenant_name"), tenants.c.created_at.label("tc")
            )
            .join(tenants, tenants.c.id == api_keys.c.tenant_id)
            .where(api_keys.c.id == key_id)
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        tenant = TenantRecord(id=row.tenant_id, name=row.tenant_name, created_at=as_utc(row.tc))
        return _key(row), tenant

    async def list_keys(self, tenant_id: TenantId) -> list[ApiKeyRecord]:
        query = (
            api_keys.select()
            .where(api_keys.c.tenant_id == tenant_id)
            .order_by(api_keys.c.created_at)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_key(r) for r in rows]

    async def revoke_key(self, tenant_id: TenantId, key_id: str) -> ApiKeyRecord:
        where = sa.and_(api_keys.c.tenant_id == tenant_id, api_keys.c.id == key_id)
        async with self.changes.begin() as conn:
            await conn.execute(
                api_keys.update()
                .where(where, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=self._now())
            )
            row = (await conn.execute(api_keys.select().where(where))).first()
            if row is not None:
                self.changes.changed(Change.of("key", tenant_id, name=key_id))
        if row is None:
            raise NotFoundError(f"key {key_id!r} does not exist")
        return _key(row)

    async def adopt_key(
        self, tenant_id: TenantId, copy: ApiKeyRecord, key: str | None = None
    ) -> bool:
        """Take in a key another site made: the same id then authenticates here too, and its
        revocation there revokes it here. A key id that another tenant holds here is left
        alone. Whether anything changed.

        With `key` (the key's text, which the caller checked against `copy.key_hash`), a live
        key is also sealed here as `create_key` seals this site's own keys (so it can sign
        requests here); a key taken earlier without one gets it now. Without a secret key here
        nothing is sealed."""
        sealed = (
            None
            if key is None or self._box is None or copy.revoked_at is not None
            else self._box.encrypt(key, _key_binding(copy.id))
        )
        async with self.changes.begin() as conn:
            row = (await conn.execute(api_keys.select().where(api_keys.c.id == copy.id))).first()
            if row is None:
                await conn.execute(
                    api_keys.insert().values(
                        id=copy.id,
                        tenant_id=tenant_id,
                        scope=str(copy.scope),
                        key_hash=copy.key_hash,
                        description=copy.description,
                        created_at=copy.created_at,
                        revoked_at=copy.revoked_at,
                        sealed_key=sealed,
                    )
                )
                # A process that was asked for this id before remembers it as unknown.
                self.changes.changed(Change.of("key", tenant_id, name=copy.id))
                return True
            if row.tenant_id != tenant_id or row.revoked_at is not None:
                return False
            changes: dict[str, Any] = {}
            if copy.revoked_at is not None:
                changes["revoked_at"] = copy.revoked_at
            elif sealed is not None and row.sealed_key is None and row.key_hash == copy.key_hash:
                changes["sealed_key"] = sealed
            if not changes:
                return False
            await conn.execute(api_keys.update().where(api_keys.c.id == copy.id).values(**changes))
            self.changes.changed(Change.of("key", tenant_id, name=copy.id))
            return True

    # buses ---------------------------------------------------------------------------------

    async def put_bus(
        self,
        tenant_id: TenantId,
        name: str,
        *,
        description: str = "",
        schema_validation: str = "off",
        max_buses: int = 100,
    ) -> tuple[BusRecord, bool]:
        """Create or update a bus; returns the bus and whether it was created."""
        check_name("bus", name)
        if schema_validation not in VALIDATION_MODES:
            raise ValueError(f"schema_validation must be one of {', '.join(VALIDATION_MODES)}")
        now = self._now()
        where = sa.and_(buses.c.tenant_id == tenant_id, buses.c.name == name)
        async with self.changes.begin() as conn:
            row = (await conn.execute(buses.select().where(where))).first()
            if row is None:
                count = await conn.scalar(
                    sa.select(sa.func.count())
                    .select_from(buses)
                    .where(buses.c.tenant_id == tenant_id)
                )
                own = await tenant_limit(conn, tenant_id, "buses")
                limit = max_buses if own is None else own
                if (count or 0) >= limit:
                    raise ConflictError(
                        f"the tenant already has {count} buses (limit {limit}"
                        + (", the tenant's quota)" if own is not None else ")")
                    )
                await conn.execute(
                    buses.insert().values(
                        tenant_id=tenant_id,
                        name=name,
                        description=description,
                        schema_validation=schema_validation,
                        created_at=now,
                        updated_at=now,
                    )
                )
                created = True
            else:
                await conn.execute(
                    buses.update()
                    .where(where)
                    .values(
                        description=description,
                        schema_validation=schema_validation,
                        updated_at=now,
                    )
                )
                created = False
            row = (await conn.execute(buses.select().where(where))).one()
            self.changes.changed(Change.of("bus", tenant_id, name))
        return _bus(row), created

    async def get_bus(self, tenant_id: TenantId, name: str) -> BusRecord | None:
        where = sa.and_(buses.c.tenant_id == tenant_id, buses.c.name == name)
        async with self._engine.connect() as conn:
            row = (await conn.execute(buses.select().where(where))).first()
        return _bus(row) if row else None

    async def list_buses(self, tenant_id: TenantId) -> list[BusRecord]:
        query = buses.select().where(buses.c.tenant_id == tenant_id).order_by(buses.c.name)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_bus(r) for r in rows]

    async def delete_bus(self, tenant_id: TenantId, name: str) -> None:
        if name == DEFAULT_BUS:
            raise ConflictError("the default bus cannot be deleted")
        where = sa.and_(buses.c.tenant_id == tenant_id, buses.c.name == name)
        async with self.changes.begin() as conn:
            result = await conn.execute(buses.delete().where(where))
            if result.rowcount:
                self.changes.changed(Change.of("bus", tenant_id, name))
        if result.rowcount == 0:
            raise NotFoundError(f"bus {name!r} does not exist")

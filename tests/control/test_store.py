"""The control plane store, on SQLite and PostgreSQL alike: migrations, tenants, keys, buses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa

from stellwerk.auth import Scope, hash_key, parse_key
from stellwerk.names import InvalidNameError
from stellwerk.storage.control import ConflictError, ControlPlane, NotFoundError, migrate
from stellwerk.storage.control.store import create_engine


async def test_migrations_reach_head_and_go_back_down(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        assert await migrate.current_revision(engine) is None
        await migrate.upgrade(engine)
        assert await migrate.current_revision(engine) == migrate.head_revision()
        async with engine.connect() as conn:
            names = await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
        assert {"tenants", "api_keys", "buses"} <= names
        # Upgrading again is a no-op (every process migrates at start).
        await migrate.upgrade(engine)
        await migrate.downgrade(engine, "base")
        async with engine.connect() as conn:
            names = await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
        assert not {"tenants", "api_keys", "buses"} & names
        await migrate.upgrade(engine)
        assert await migrate.current_revision(engine) == migrate.head_revision()
    finally:
        await engine.dispose()


async def test_processes_starting_together_on_an_empty_postgres_database_all_migrate(
    postgres_url: str,
) -> None:
    """Scale-out processes start at once: without the migration lock, all but one fail on
    "relation already exists" (seen with four engines before the lock)."""
    engines = [create_engine(postgres_url) for _ in range(4)]
    try:
        await asyncio.gather(*(migrate.upgrade(engine) for engine in engines))
        for engine in engines:
            assert await migrate.current_revision(engine) == migrate.head_revision()
    finally:
        for engine in engines:
            await engine.dispose()


@pytest.fixture
async def control(database_url: str) -> AsyncIterator[ControlPlane]:
    plane = await ControlPlane.open(database_url)
    yield plane
    await plane.close()


async def test_a_tenant_starts_with_the_default_bus(control: ControlPlane) -> None:
    tenant = await control.create_tenant("acme")
    assert [b.name for b in await control.list_buses(tenant.id)] == ["default"]
    assert (await control.get_tenant("acme")) == tenant
    with pytest.raises(ConflictError, match="already exists"):
        await control.create_tenant("acme")
    with pytest.raises(InvalidNameError, match=r"\[A-Za-z0-9._-\]\{1,64\}"):
        await control.create_tenant("no spaces")


async def test_keys_are_stored_only_as_hashes_and_can_be_revoked(control: ControlPlane) -> None:
    tenant = await control.create_tenant("acme")
    record, key = await control.create_key(tenant.id, Scope.INGEST, "ci")
    assert parse_key(key).key_id == record.id
    async with control.engine.connect() as conn:
        rows = (await conn.execute(sa.text("SELECT * FROM api_keys"))).mappings().all()
    stored = " ".join(str(v) for row in rows for v in row.values())
    assert parse_key(key).secret not in stored
    assert rows[0]["key_hash"] == hash_key(key)

    found = await control.find_key(record.id)
    assert found is not None
    assert found[0].scope is Scope.INGEST
    assert found[1].name == "acme"
    revoked = await control.revoke_key(tenant.id, record.id)
    assert revoked.revoked_at is not None
    again = await control.find_key(record.id)
    assert again is not None
    assert again[0].revoked_at is not None


async def test_keys_and_buses_are_scoped_by_tenant(control: ControlPlane) -> None:
    a = await control.create_tenant("a")
    b = await control.create_tenant("b")
    key_a, _ = await control.create_key(a.id, Scope.ADMIN)
    await control.put_bus(a.id, "orders")

    assert [k.id for k in await control.list_keys(b.id)] == []
    with pytest.raises(NotFoundError):
        await control.revoke_key(b.id, key_a.id)
    assert await control.get_bus(b.id, "orders") is None
    with pytest.raises(NotFoundError):
        await control.delete_bus(b.id, "orders")
    assert await control.get_bus(a.id, "orders") is not None


async def test_buses_update_in_place_and_respect_the_limit(control: ControlPlane) -> None:
    tenant = await control.create_tenant("acme")
    bus, created = await control.put_bus(tenant.id, "orders", description="v1", max_buses=2)
    assert created
    again, created = await control.put_bus(tenant.id, "orders", description="v2", max_buses=2)
    assert not created
    assert again.description == "v2"
    assert again.created_at == bus.created_at
    with pytest.raises(ConflictError, match="limit 2"):
        await control.put_bus(tenant.id, "payments", max_buses=2)
    with pytest.raises(ConflictError, match="default bus"):
        await control.delete_bus(tenant.id, "default")
    await control.delete_bus(tenant.id, "orders")
    assert [b.name for b in await control.list_buses(tenant.id)] == ["default"]

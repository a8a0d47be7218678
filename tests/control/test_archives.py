"""Archive definitions on SQLite and PostgreSQL: create and update, limits, tenant scope, and
the archiver taking an archive in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from stellwerk.refs import TenantId
from stellwerk.storage.control import ArchiveRecord, ConflictError, ControlPlane, migrate
from stellwerk.storage.control.store import create_engine

PATTERN = {"type": ["order.created"]}


@pytest.fixture
async def control(database_url: str) -> AsyncIterator[ControlPlane]:
    plane = await ControlPlane.open(database_url)
    yield plane
    await plane.close()


async def test_create_then_update_keeps_uid_and_start(control: ControlPlane) -> None:
    acme = await control.create_tenant("acme")

    created, is_new = await control.archives.put(
        acme.id,
        "default",
        "orders",
        pattern=PATTERN,
        retention_days=30,
        description="all orders",
        start_position=41,
        max_archives=10,
    )

    assert is_new
    assert (created.bus, created.name, created.pattern) == ("default", "orders", PATTERN)
    assert (created.retention_days, created.description, created.start_position) == (
        30,
        "all orders",
        41,
    )
    assert created.created_at.tzinfo is not None
    assert await control.archives.get(acme.id, "default", "orders") == created

    updated, is_new = await control.archives.put(
        acme.id,
        "default",
        "orders",
        pattern=None,
        retention_days=0,
        description="",
        start_position=99,
        max_archives=10,
    )

    assert not is_new
    assert (updated.uid, updated.start_position, updated.created_at) == (
        created.uid,
        41,
        created.created_at,
    )
    assert (updated.pattern, updated.retention_days, updated.description) == (None, 0, "")


async def test_archives_are_scoped_by_tenant_and_bus(control: ControlPlane) -> None:
    acme = await control.create_tenant("acme")
    globex = await control.create_tenant("globex")
    await control.put_bus(acme.id, "audit")
    for tenant, bus, name in [
        (acme.id, "default", "b"),
        (acme.id, "default", "a"),
        (acme.id, "audit", "a"),
        (globex.id, "default", "a"),
    ]:
        await control.archives.put(
            tenant,
            bus,
            name,
            pattern=None,
            retention_days=0,
            description="",
            start_position=0,
            max_archives=10,
        )

    assert [a.name for a in await control.archives.for_bus(acme.id, "default")] == ["a", "b"]
    assert [a.name for a in await control.archives.for_bus(acme.id, "audit")] == ["a"]
    assert await control.archives.get(globex.id, "audit", "a") is None
    everything = await control.archives.everything()
    assert [(t, a.bus, a.name) for t, a in everything] == [
        ("acme", "audit", "a"),
        ("acme", "default", "a"),
        ("acme", "default", "b"),
        ("globex", "default", "a"),
    ]
    assert len({a.uid for _, a in everything}) == 4

    assert await control.archives.delete(globex.id, "default", "b") is None
    deleted = await control.archives.delete(acme.id, "default", "a")
    assert deleted is not None
    assert deleted.name == "a"
    assert [a.name for a in await control.archives.for_bus(acme.id, "default")] == ["b"]
    assert await control.archives.get(globex.id, "default", "a") is not None


async def test_a_name_created_again_gets_a_new_uid(control: ControlPlane) -> None:
    acme = await control.create_tenant("acme")

    async def put() -> str:
        record, _ = await control.archives.put(
            acme.id,
            "default",
            "a",
            pattern=None,
            retention_days=0,
            description="",
            start_position=0,
            max_archives=10,
        )
        return record.uid

    first = await put()
    await control.archives.delete(acme.id, "default", "a")

    assert await put() != first


async def test_the_limit_counts_archives_per_bus(control: ControlPlane) -> None:
    acme = await control.create_tenant("acme")
    await control.put_bus(acme.id, "audit")

    async def put(bus: str, name: str) -> None:
        await control.archives.put(
            acme.id,
            bus,
            name,
            pattern=None,
            retention_days=0,
            description="",
            start_position=0,
            max_archives=2,
        )

    await put("default", "a")
    await put("default", "b")
    with pytest.raises(ConflictError, match="limit 2"):
        await put("default", "c")
    await put("default", "b")  # an update is no new archive
    await put("audit", "c")
    with pytest.raises(ValueError, match="retention_days"):
        await control.archives.put(
            acme.id,
            "audit",
            "d",
            pattern=None,
            retention_days=-1,
            description="",
            start_position=0,
            max_archives=2,
        )


async def test_deleting_the_bus_deletes_its_archives(control: ControlPlane) -> None:
    acme = await control.create_tenant("acme")
    await control.put_bus(acme.id, "audit")
    await control.archives.put(
        acme.id,
        "audit",
        "a",
        pattern=None,
        retention_days=0,
        description="",
        start_position=0,
        max_archives=2,
    )

    await control.delete_bus(acme.id, "audit")

    assert await control.archives.everything() == []


async def _orders(control: ControlPlane, tenant_id: TenantId, start: int) -> ArchiveRecord:
    record, _ = await control.archives.put(
        tenant_id,
        "default",
        "orders",
        pattern=PATTERN,
        retention_days=0,
        description="",
        start_position=start,
        max_archives=10,
    )
    return record


async def test_the_first_take_raises_the_start_to_the_archivers_cursor(
    control: ControlPlane,
) -> None:
    acme = await control.create_tenant("acme")
    created = await _orders(control, acme.id, 41)
    assert not created.taken

    taken = await control.archives.take(created.uid, 57)

    assert taken is not None
    assert taken.taken
    assert taken.start_position == 57  # the archiver had looked at 42..57 without it
    assert await control.archives.get(acme.id, "default", "orders") == taken
    # Only the first take counts: a second archiver (a lease changing hands) changes nothing.
    again = await control.archives.take(created.uid, 90)
    assert again == taken
    # An update keeps it taken, and its start.
    updated = await _orders(control, acme.id, 99)
    assert (updated.taken, updated.start_position) == (True, 57)


async def test_a_take_behind_the_start_keeps_the_start(control: ControlPlane) -> None:
    acme = await control.create_tenant("acme")
    created = await _orders(control, acme.id, 41)

    taken = await control.archives.take(created.uid, 12)  # the archiver lags behind the bus

    assert taken is not None
    assert (taken.taken, taken.start_position) == (True, 41)


async def test_taking_a_deleted_archive_finds_nothing(control: ControlPlane) -> None:
    acme = await control.create_tenant("acme")
    created = await _orders(control, acme.id, 41)
    await control.archives.delete(acme.id, "default", "orders")

    assert await control.archives.take(created.uid, 50) is None


async def test_archives_from_before_the_take_migration_count_as_taken(
    empty_database_url: str,
) -> None:
    """Before 0006 the embedded archiver took every archive in as it was created."""
    engine = create_engine(empty_database_url)
    try:
        await migrate.upgrade(engine, "0005")
        async with engine.begin() as conn:
            now = {"now": datetime.now(UTC)}
            for statement in (
                "INSERT INTO tenants (id, name, created_at) VALUES ('t1', 'acme', :now)",
                "INSERT INTO buses (tenant_id, name, created_at, updated_at)"
                " VALUES ('t1', 'default', :now, :now)",
                "INSERT INTO archives (tenant_id, bus, name, uid, retention_days, description,"
                " start_position, created_at, updated_at)"
                " VALUES ('t1', 'default', 'old', 'u1', 0, '', 7, :now, :now)",
            ):
                await conn.execute(sa.text(statement), now)
        await migrate.upgrade(engine)
    finally:
        await engine.dispose()
    control = await ControlPlane.open(empty_database_url)
    try:
        old = await control.archives.get(TenantId("t1"), "default", "old")
    finally:
        await control.close()
    assert old is not None
    assert (old.taken, old.start_position) == (True, 7)

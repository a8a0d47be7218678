"""Archive definitions on SQLite and PostgreSQL: create and update, limits, tenant scope."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from stellwerk.storage.control import ConflictError, ControlPlane

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

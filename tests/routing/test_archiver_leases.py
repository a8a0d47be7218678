"""The archiver's lease hooks (SQLite): only the buses it owns, and a lost race is no error."""

from __future__ import annotations

from tests.routing import test_archiver
from tests.routing.test_archiver import Setup

from stellwerk.refs import BusRef, TenantName

setup = test_archiver.setup  # the fixture, SQLite files in tmp_path


async def test_an_archiver_archives_only_the_buses_it_owns(setup: Setup) -> None:
    owned: set[tuple[str, str]] = set()
    archiver = setup.archiver(owns=lambda bus: (bus.tenant, bus.bus) in owned)
    record = await setup.create(archiver, "all")
    await setup.append("e1", "e2")
    assert await archiver.archive_bus(BusRef(TenantName("acme"), "default")) == 0
    assert await setup.ids(record) == []
    owned.add(("acme", "default"))
    assert await archiver.archive_bus(BusRef(TenantName("acme"), "default")) == 2
    assert await setup.ids(record) == ["e1", "e2"]


async def test_an_archiver_that_loses_the_race_for_a_batch_carries_on(setup: Setup) -> None:
    one, two = setup.archiver(batch=2), setup.archiver(batch=2)
    record = await setup.create(one, "all")
    await two.reload()
    await setup.append("e1", "e2", "e3", "e4")
    assert await two.archive_batch(BusRef(TenantName("acme"), "default")) == 2
    await one.archive_bus(BusRef(TenantName("acme"), "default"))
    await setup.append("e5")
    # The second still believes the cursor at 2: refused once, it reads it and goes on.
    assert await two.archive_bus(BusRef(TenantName("acme"), "default")) == 1
    assert await setup.ids(record) == ["e1", "e2", "e3", "e4", "e5"]

"""The archiver on a real control plane, event log and archive store (SQLite files in tmp_path)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.polling import eventually
from tests.storage.eventlog_support import T0, MovableClock, new_event

from stellwerk.ops.metrics import Metrics
from stellwerk.refs import BusRef, TenantId, TenantName
from stellwerk.routing.archiver import (
    ARCHIVE_GATHER_SECONDS,
    Archiver,
    ArchiverMetrics,
    archive_floors,
    is_replayed,
    trim_archives,
)
from stellwerk.routing.follower import GATHER_SECONDS
from stellwerk.seams import ArchiveCursorConflict, ArchivedEvent
from stellwerk.storage.archive.sqlite import SqliteArchiveStore
from stellwerk.storage.control import ArchiveRecord, ControlPlane
from stellwerk.storage.eventlog.sqlite import SqliteEventLog
from stellwerk.storage.sqlite import LOG_DIR, PIPELINE_FILE

ACME_DEFAULT = BusRef(TenantName("acme"), "default")

ORDERS = {"type": ["order.created"]}
WIDE = (T0 - timedelta(days=365), T0 + timedelta(days=365))


@dataclass
class Setup:
    control: ControlPlane
    tenant_id: TenantId
    log: SqliteEventLog
    store: SqliteArchiveStore
    clock: MovableClock

    def archiver(self, **kwargs: Any) -> Archiver:
        return Archiver(self.log, self.store, self.control, **kwargs)

    async def create(
        self,
        archiver: Archiver,
        name: str,
        pattern: dict[str, Any] | None = None,
        *,
        bus: str = "default",
        retention_days: int = 0,
    ) -> ArchiveRecord:
        """As the API does: read the start and save the archive with the archiver paused."""
        async with archiver.paused():
            start = await self.log.last_position(BusRef(TenantName("acme"), bus))
            record, _ = await self.control.archives.put(
                self.tenant_id,
                bus,
                name,
                pattern=pattern,
                retention_days=retention_days,
                description="",
                start_position=start,
                max_archives=10,
            )
        return record

    async def append(self, *ids: str, **kwargs: Any) -> None:
        await self.log.append([new_event(i, **kwargs) for i in ids])

    async def ids(self, record: ArchiveRecord) -> list[str]:
        return [e.id for e in await self.events(record)]

    async def events(self, record: ArchiveRecord) -> list[ArchivedEvent]:
        return await self.store.read_window(record.uid, *WIDE)


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    clock = MovableClock()
    control = await ControlPlane.open(f"sqlite+aiosqlite:///{tmp_path / 'control.db'}")
    tenant = await control.create_tenant("acme")
    await control.put_bus(tenant.id, "audit")
    async with (
        SqliteEventLog(tmp_path / LOG_DIR, clock=clock) as log,
        SqliteArchiveStore(tmp_path / PIPELINE_FILE) as store,
    ):
        yield Setup(control, tenant.id, log, store, clock)
    await control.close()


async def test_archives_keep_their_matching_events_from_their_creation_on(setup: Setup) -> None:
    archiver = setup.archiver()
    await setup.append("before", event_type="order.created")
    orders = await setup.create(archiver, "orders", ORDERS)
    everything = await setup.create(archiver, "everything")
    await setup.append("o1", event_type="order.created")
    await setup.append("p1", event_type="payment.done")
    await setup.append("o2", event_type="order.created", extensions={"replayname": "r1"})
    await setup.append("o3", event_type="order.created", bus="audit")

    await archiver.run(burst=True)

    assert await setup.ids(orders) == ["o1"]
    assert await setup.ids(everything) == ["o1", "p1"]
    assert await setup.store.cursor(ACME_DEFAULT) == await setup.log.last_position(ACME_DEFAULT)
    # No archive on the audit bus: the archiver never looks at it.
    assert await setup.store.cursor(BusRef(TenantName("acme"), "audit")) == 0


async def test_an_archive_created_later_starts_at_its_own_position(setup: Setup) -> None:
    archiver = setup.archiver(batch=2)
    first = await setup.create(archiver, "first")
    await setup.append("e1", "e2", "e3")
    await archiver.run(burst=True)
    second = await setup.create(archiver, "second")
    await setup.append("e4", "e5")

    await archiver.run(burst=True)

    assert await setup.ids(first) == ["e1", "e2", "e3", "e4", "e5"]
    assert await setup.ids(second) == ["e4", "e5"]


async def test_a_new_first_archive_skips_the_history_of_its_bus(setup: Setup) -> None:
    await setup.append(*(f"old{i}" for i in range(50)))
    archiver = setup.archiver(batch=10)
    record = await setup.create(archiver, "new")
    await setup.append("new1")

    looked_at = await archiver.archive_bus(BusRef(TenantName("acme"), "default"))

    assert looked_at == 1
    assert await setup.ids(record) == ["new1"]


async def test_the_cursor_reaches_the_head_of_the_log_with_nothing_to_archive(
    setup: Setup,
) -> None:
    # Replays wait for the archiver's cursor to reach the head of the bus's log.
    await setup.append("old1", "old2")
    archiver = setup.archiver()
    await setup.create(archiver, "new")

    await archiver.run(burst=True)

    head = await setup.log.last_position(ACME_DEFAULT)
    assert await setup.store.cursor(ACME_DEFAULT) == head


async def test_a_restarted_archiver_resumes_at_its_cursor(setup: Setup) -> None:
    archiver = setup.archiver(batch=3)
    record = await setup.create(archiver, "all")
    await setup.append(*(f"a{i}" for i in range(7)))
    await archiver.run(burst=True)
    await setup.append(*(f"b{i}" for i in range(4)))

    again = setup.archiver(batch=3)
    await again.reload()
    await again.run(burst=True)

    assert await setup.ids(record) == [f"a{i}" for i in range(7)] + [f"b{i}" for i in range(4)]


async def test_a_second_archiver_on_the_same_bus_conflicts_and_recovers(setup: Setup) -> None:
    one, two = setup.archiver(batch=2), setup.archiver(batch=2)
    record = await setup.create(one, "all")
    await two.reload()
    await setup.append("e1", "e2", "e3", "e4")
    assert await two.archive_batch(BusRef(TenantName("acme"), "default")) == 2

    await one.archive_bus(BusRef(TenantName("acme"), "default"))
    await setup.append("e5")
    with pytest.raises(ArchiveCursorConflict):
        await two.archive_batch(BusRef(TenantName("acme"), "default"))
    assert await two.archive_batch(BusRef(TenantName("acme"), "default")) == 1

    assert await setup.ids(record) == ["e1", "e2", "e3", "e4", "e5"]


async def test_the_running_archiver_wakes_on_notify_and_follows_changes(setup: Setup) -> None:
    # Polls too rarely to matter: only notify can wake it within the test.
    archiver = setup.archiver(poll_seconds=60, reload_seconds=60)
    task = asyncio.create_task(archiver.run())
    try:
        record = await setup.create(archiver, "orders", ORDERS)
        await setup.append("o1")
        archiver.notify(BusRef(TenantName("acme"), "default"))
        await eventually(lambda: _has(setup, record, ["o1"]))

        async with archiver.paused():
            await setup.control.archives.put(
                setup.tenant_id,
                "default",
                "orders",
                pattern={"type": ["order.shipped"]},
                retention_days=0,
                description="",
                start_position=0,
                max_archives=10,
            )
        await setup.append("o2")
        await setup.append("s1", event_type="order.shipped")
        archiver.notify(BusRef(TenantName("acme"), "default"))
        await eventually(lambda: _has(setup, record, ["o1", "s1"]))

        async with archiver.paused():
            await setup.control.archives.delete(setup.tenant_id, "default", "orders")
        # The reload on leaving the pause dropped what the deleted archive held.
        assert await setup.ids(record) == []
    finally:
        archiver.stop()
        await asyncio.wait_for(task, 10)


async def test_an_append_to_a_bus_without_an_archive_wakes_no_round(setup: Setup) -> None:
    archiver = setup.archiver(poll_seconds=60, reload_seconds=60)
    await archiver.reload()
    archiver.notify(ACME_DEFAULT)
    assert not archiver.appended.is_set()
    await setup.create(archiver, "orders", ORDERS)  # the reload on leaving the pause wakes
    archiver.appended.clear()
    archiver.notify(ACME_DEFAULT)
    assert archiver.appended.is_set()


async def _has(setup: Setup, record: ArchiveRecord, ids: list[str]) -> bool:
    return await setup.ids(record) == ids


async def _put(setup: Setup, name: str, pattern: dict[str, Any] | None = None) -> ArchiveRecord:
    """As the API of another process does: this archiver is neither paused nor told."""
    record, _ = await setup.control.archives.put(
        setup.tenant_id,
        "default",
        name,
        pattern=pattern,
        retention_days=0,
        description="",
        start_position=await setup.log.last_position(ACME_DEFAULT),
        max_archives=10,
    )
    return record


async def test_an_archive_heard_of_late_starts_where_its_archiver_had_got(setup: Setup) -> None:
    archiver = setup.archiver(batch=2)
    old = await setup.create(archiver, "old")
    await setup.append("a1")
    await archiver.archive_bus(BusRef(TenantName("acme"), "default"))
    late = await _put(setup, "late")
    # The archiver archives on with the definitions it has, past the new archive's start.
    await setup.append("a2", "a3", "a4")
    await archiver.archive_bus(BusRef(TenantName("acme"), "default"))
    cursor = await setup.store.cursor(ACME_DEFAULT)
    assert cursor > late.start_position

    await archiver.reload()  # the news arrives
    await setup.append("a5")
    await archiver.archive_bus(BusRef(TenantName("acme"), "default"))

    taken = await setup.control.archives.get(setup.tenant_id, "default", "late")
    assert taken is not None
    assert taken.taken
    # It claims nothing it did not get: it begins after the events looked at without it.
    assert taken.start_position == cursor
    assert await setup.ids(late) == ["a5"]
    assert await setup.ids(old) == ["a1", "a2", "a3", "a4", "a5"]
    floors = await archive_floors(setup.control, setup.store)
    assert floors[ACME_DEFAULT] == await setup.log.last_position(ACME_DEFAULT)


async def test_a_lagging_archiver_takes_an_archive_in_at_its_creation(setup: Setup) -> None:
    archiver = setup.archiver(batch=2)
    await setup.create(archiver, "old")
    await setup.append("a1", "a2", "a3")  # not yet archived
    late = await _put(setup, "late")
    await setup.append("a4")

    await archiver.reload()
    await archiver.archive_bus(BusRef(TenantName("acme"), "default"))

    taken = await setup.control.archives.get(setup.tenant_id, "default", "late")
    assert taken is not None
    assert (taken.taken, taken.start_position) == (True, late.start_position)
    assert await setup.ids(late) == ["a4"]


async def test_only_the_running_archiver_of_the_bus_takes_in_at_once(setup: Setup) -> None:
    idle = setup.archiver()
    await idle.reload()
    record = await _put(setup, "new")
    await idle.reload()

    await idle.take_in(
        BusRef(TenantName("acme"), "default")
    )  # not running: as in a gateway process
    assert not await _taken(setup, record)

    elsewhere = setup.archiver(poll_seconds=60, reload_seconds=60, owns=lambda bus: False)
    task = asyncio.create_task(elsewhere.run())
    try:
        await elsewhere.reload()
        await elsewhere.take_in(
            BusRef(TenantName("acme"), "default")
        )  # running, but the bus is another's
        assert not await _taken(setup, record)
    finally:
        elsewhere.stop()
        await asyncio.wait_for(task, 10)

    # Polls too rarely to matter: the reload itself wakes it to take the archive in.
    archiver = setup.archiver(poll_seconds=60, reload_seconds=60)
    task = asyncio.create_task(archiver.run())
    try:
        await eventually(lambda: _taken(setup, record))
        second = await _put(setup, "second")
        await archiver.reload()
        await archiver.take_in(BusRef(TenantName("acme"), "default"))
        assert await _taken(setup, second)
    finally:
        archiver.stop()
        await asyncio.wait_for(task, 10)


async def _taken(setup: Setup, record: ArchiveRecord) -> bool:
    current = await setup.control.archives.get(setup.tenant_id, record.bus, record.name)
    return current is not None and current.taken


async def test_metrics_count_events_looked_at_and_copies(setup: Setup) -> None:
    metrics = Metrics()
    archiver = setup.archiver(hooks=ArchiverMetrics(metrics))
    await setup.create(archiver, "a")
    await setup.create(archiver, "b", ORDERS)
    await setup.append("o1")
    await setup.append("p1", event_type="payment.done")

    await archiver.run(burst=True)

    labels = {"tenant": "acme", "bus": "default"}
    assert metrics.registry.get_sample_value("stellwerk_archiver_events_total", labels) == 2
    assert metrics.registry.get_sample_value("stellwerk_archived_events_total", labels) == 3


async def test_trim_archives_applies_each_retention(setup: Setup) -> None:
    archiver = setup.archiver()
    short = await setup.create(archiver, "short", retention_days=2)
    forever = await setup.create(archiver, "forever", retention_days=0)
    for day in range(5):
        await setup.append(f"d{day}")
        setup.clock.advance(timedelta(days=1))
    await archiver.run(burst=True)

    # Now is T0 + 5 days: "short" keeps what was recorded in the last 2 days.
    removed = await trim_archives(setup.control, setup.store, setup.clock())

    assert removed == 3
    assert await setup.ids(short) == ["d3", "d4"]
    assert await setup.ids(forever) == [f"d{d}" for d in range(5)]
    assert (await setup.store.stats([short.uid]))[short.uid].events == 2


async def test_floors_are_where_each_archived_bus_is_done(setup: Setup) -> None:
    archiver = setup.archiver()
    assert await archive_floors(setup.control, setup.store) == {}
    await setup.append("e1", "e2")
    record = await setup.create(archiver, "a")
    assert await archive_floors(setup.control, setup.store) == {ACME_DEFAULT: record.start_position}
    await setup.append("e3")
    before = await archive_floors(setup.control, setup.store)

    await archiver.run(burst=True)

    last = await setup.log.last_position(ACME_DEFAULT)
    assert before == {ACME_DEFAULT: record.start_position}
    assert await archive_floors(setup.control, setup.store) == {ACME_DEFAULT: last}


def test_only_a_top_level_replayname_marks_a_replayed_event() -> None:
    assert is_replayed(b'{"id":"1","replayname":"r1"}')
    assert not is_replayed(b'{"id":"1","data":{"replayname":"r1"}}')
    assert not is_replayed(b'{"id":"1"}')


async def test_woken_by_appends_the_archiver_gathers_a_tenth_of_a_second(setup: Setup) -> None:
    # The follower's gathering pause (tested with the router in test_router.py), set long here:
    # single-event requests are archived tens at a time, not one commit of four pages each.
    assert setup.archiver().gather_seconds == ARCHIVE_GATHER_SECONDS == 0.1
    assert GATHER_SECONDS < ARCHIVE_GATHER_SECONDS  # the router's, on delivery's way

"""The `lake` rule target over the whole app: matched events become Parquet rows, partitioned by
tenant, bus and date; files roll by rows and by time; a re-delivered event is not written
twice; a crash between claiming rows and writing their file is mended on the next start."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import pytest
from tests.conftest import RunningApp, app_running
from tests.polling import eventually

from stellwerk.capability import Delivered, TargetSpec
from stellwerk.config import load_settings
from stellwerk.ops import Metrics
from stellwerk.refs import BusRef, TenantName
from stellwerk.seams import Delivery
from stellwerk.tracking.lake import (
    LakeParameters,
    LakeTargetKind,
    LakeWriter,
    row_of,
    write_file,
)
from stellwerk.tracking.lake_metrics import LakeMetrics
from stellwerk.tracking.lake_spool import Spool, Staged


async def save_lake_rule(
    app: RunningApp, name: str = "to-lake", bus: str = "default", **parameters: Any
) -> None:
    saved = await app.client.put(
        f"/v1/buses/{bus}/rules/{name}",
        headers=app.admin,
        json={
            "pattern": {"source": [{"prefix": ""}]},
            "targets": [{"id": "lake", "type": "lake", "parameters": parameters}],
        },
    )
    assert saved.status_code in (200, 201), saved.text


async def send(app: RunningApp, events: list[dict[str, Any]], bus: str = "default") -> None:
    response = await app.client.post(
        f"/v1/buses/{bus}/events",
        headers={
            **app.auth(app.bootstrap.ingest_key),
            "Content-Type": "application/cloudevents-batch+json",
        },
        content=msgspec.json.encode([{"specversion": "1.0", **e} for e in events]),
    )
    assert response.status_code == 202, response.text


def lake_files(app: RunningApp) -> list[Path]:
    return sorted((app.settings.data_dir / "lake").rglob("*.parquet"))


def lake_rows(app: RunningApp) -> list[tuple[Any, ...]]:
    pattern = str(app.settings.data_dir / "lake" / "*" / "*" / "*" / "*.parquet")
    if not lake_files(app):
        return []
    with duckdb.connect() as db:
        return db.execute(
            "SELECT tenant, bus, id, type, subject, event->>'$.data.n'"
            f" FROM read_parquet('{pattern}', hive_partitioning = true) ORDER BY id"
        ).fetchall()


@pytest.fixture
async def lake_app(tmp_path: Path) -> Any:
    settings = load_settings({"data_dir": str(tmp_path / "data")})
    async with app_running(settings) as running:
        yield running


async def test_matched_events_become_parquet_rows_partitioned_by_tenant_bus_and_date(
    lake_app: RunningApp,
) -> None:
    app = lake_app
    await save_lake_rule(app, roll_seconds=0.1)
    await send(
        app,
        [
            {
                "id": f"e{n}",
                "source": "shop",
                "type": "order.placed",
                "subject": "u-1",
                "data": {"n": n},
            }
            for n in range(5)
        ],
    )
    rows = await eventually(lambda: lake_rows(app), accept=lambda r: len(r) == 5)
    assert rows == [
        ("default", "default", f"e{n}", "order.placed", "u-1", str(n)) for n in range(5)
    ]
    (file,) = lake_files(app)
    assert file.parent.name.startswith("date=")
    assert file.parent.parent.name == "bus=default"
    assert file.parent.parent.parent.name == "tenant=default"
    # No temporary file is left beside it.
    assert [p.name for p in file.parent.iterdir()] == [file.name]
    # The file is in place a moment before the writer counts it.
    written = 'stellwerk_lake_files_total{outcome="written",tenant="default"} 1.0'
    metrics = await eventually(
        lambda: app.client.get("/metrics"), accept=lambda m: written in m.text
    )
    assert 'stellwerk_lake_rows_total{outcome="staged",tenant="default"} 5.0' in metrics.text
    await eventually(
        lambda: app.client.get("/metrics"),
        accept=lambda m: "stellwerk_lake_rows_waiting 0.0" in m.text,
    )


async def test_files_roll_by_rows(lake_app: RunningApp) -> None:
    app = lake_app
    await save_lake_rule(app, roll_rows=4, roll_seconds=3600)
    await send(app, [{"id": f"e{n}", "source": "s", "type": "t"} for n in range(8)])
    files = await eventually(lambda: lake_files(app), accept=lambda f: len(f) == 2)
    with duckdb.connect() as db:
        counts = [db.execute(f"SELECT count(*) FROM '{f}'").fetchone() for f in files]
    assert counts == [(4,), (4,)]


async def test_rows_of_two_buses_are_partitioned_apart(lake_app: RunningApp) -> None:
    app = lake_app
    assert (await app.client.put("/v1/buses/orders", headers=app.admin, json={})).status_code
    await save_lake_rule(app, roll_seconds=0.1)
    await save_lake_rule(app, bus="orders", roll_seconds=0.1)
    await send(app, [{"id": "a", "source": "s", "type": "t"}])
    await send(app, [{"id": "b", "source": "s", "type": "t"}], bus="orders")
    read = app.auth(app.bootstrap.admin_key)

    async def buses() -> Any:
        answer = await app.client.post(
            "/v1/lake/query",
            headers=read,
            json={"sql": "SELECT bus, id FROM events ORDER BY bus"},
        )
        return answer.json()["rows"]

    rows = await eventually(buses, accept=lambda r: len(r) == 2)
    assert rows == [["default", "a"], ["orders", "b"]]


def delivery(n: int, tenant: str = "default") -> Delivery:
    return Delivery(
        id=n,
        tenant=TenantName(tenant),
        bus="default",
        rule="r",
        target_id="lake",
        event_id=f"e{n}",
        event_source="s",
        position=n,
        recorded_time=datetime(2026, 12, 4, 23, 0, tzinfo=UTC),
        payload=msgspec.json.encode({"id": f"e{n}", "type": "t", "data": {"n": n}}),
        content_type="application/json",
        attempts=0,
    )


def staged(n: int) -> Staged:
    partition, row = row_of(delivery(n))
    return Staged("default/default/r/lake", partition, f"e{n}", "s", row)


async def test_a_redelivered_event_is_staged_once_even_after_its_file_is_written(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path / "spool.db")
    writer = LakeWriter(spool, str(tmp_path / "lake"), tmp_path / "scratch")
    try:
        assert [await spool.stage(staged(n)) for n in (1, 2, 1)] == [True, True, False]
        (waiting,) = spool.backlog()
        assert (waiting.rows, waiting.bytes) == (2, len(staged(1).row) + len(staged(2).row))
        assert await writer.step(everything=True) == 1
        assert spool.backlog() == []
        assert await spool.stage(staged(2)) is False
        assert await writer.step(everything=True) == 0
    finally:
        await spool.close()
    with duckdb.connect() as db:
        found = db.execute(f"SELECT id FROM '{tmp_path / 'lake'}/*/*/*/*.parquet' ORDER BY id")
        assert found.fetchall() == [("e1",), ("e2",)]


async def test_a_target_acknowledges_a_redelivery_without_a_second_row_and_counts_it(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path / "spool.db")
    metrics = LakeMetrics(Metrics(process=False))
    kind = LakeTargetKind(spool, metrics)
    owner = BusRef(TenantName("default"), "default")
    target = kind.build(owner, TargetSpec(id="lake", type="lake"))
    try:
        outcomes = [await target.deliver(delivery(n)) for n in (1, 1, 2)]
    finally:
        await spool.close()
    assert outcomes == [
        Delivered("staged"),
        Delivered("in the lake already"),
        Delivered("staged"),
    ]
    counted = {
        s.labels["outcome"]: s.value
        for family in metrics.rows.collect()
        for s in family.samples
        if s.name.endswith("_total")
    }
    assert counted == {"staged": 2.0, "duplicate": 1.0}


async def test_what_waits_is_known_again_after_a_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db")
    for n in range(5):
        await spool.stage(staged(n))
    await spool.claim("default/default/r/lake", staged(0).partition, 2, 1 << 20)
    before = spool.backlog()
    await spool.close()
    spool = Spool(tmp_path / "spool.db")
    try:
        assert [(b.rows, b.bytes) for b in spool.backlog()] == [(3, before[0].bytes)]
        assert before[0].rows == 3
    finally:
        await spool.close()


async def test_a_rule_with_bad_lake_parameters_is_refused_naming_the_field(
    lake_app: RunningApp,
) -> None:
    app = lake_app
    for parameters, field in (
        ({"roll_rows": 0}, "targets[0].parameters.roll_rows"),
        ({"roll_seconds": "soon"}, "targets[0].parameters.roll_seconds"),
        ({"url": "/etc"}, "targets[0].parameters"),
    ):
        saved = await app.client.put(
            "/v1/buses/default/rules/bad",
            headers=app.admin,
            json={
                "pattern": {"source": ["s"]},
                "targets": [{"id": "lake", "type": "lake", "parameters": parameters}],
            },
        )
        assert saved.status_code == 400, saved.text
        assert saved.json()["error"] == "InvalidRule"
        assert saved.json()["field"] == field, saved.json()


async def test_a_claim_whose_file_was_not_written_is_written_on_the_next_start(
    tmp_path: Path,
) -> None:
    lake = tmp_path / "lake"
    spool = Spool(tmp_path / "spool.db")
    for n in range(3):
        await spool.stage(staged(n))
    # A crash after the claim, before the file: the claim stays in the spool.
    claim = await spool.claim("default/default/r/lake", staged(0).partition, 10, 1 << 20)
    assert len(claim.rows) == 3
    await spool.close()

    spool = Spool(tmp_path / "spool.db")
    try:
        assert [c.file for c in await spool.claimed()] == [claim.file]
        assert await LakeWriter(spool, str(lake), tmp_path / "scratch").step() == 1
        assert await spool.claimed() == []
    finally:
        await spool.close()
    assert [p.name for p in lake.rglob("*") if p.is_file()] == [claim.file]


async def test_a_claim_whose_file_was_renamed_into_place_is_not_written_again(
    tmp_path: Path,
) -> None:
    lake = tmp_path / "lake"
    spool = Spool(tmp_path / "spool.db")
    for n in range(3):
        await spool.stage(staged(n))
    claim = await spool.claim("default/default/r/lake", staged(0).partition, 10, 1 << 20)
    # A crash after the rename, before the spool learnt of it.
    write_file(str(lake), tmp_path / "scratch", claim)
    written = (lake / claim.partition / claim.file).stat().st_mtime_ns
    await spool.close()

    spool = Spool(tmp_path / "spool.db")
    try:
        assert await LakeWriter(spool, str(lake), tmp_path / "scratch").step() == 1
        assert await spool.claimed() == []
    finally:
        await spool.close()
    assert (lake / claim.partition / claim.file).stat().st_mtime_ns == written


def test_a_row_keeps_the_events_own_time_in_utc_and_a_payload_that_is_not_json_as_text() -> None:
    event = msgspec.json.encode(
        {"id": "e1", "type": "t", "subject": "u", "time": "2026-12-04T23:30:00+01:00"}
    )
    partition, row = row_of(msgspec.structs.replace(delivery(1), payload=event))
    assert partition == "tenant=default/bus=default/date=2026-12-04"
    decoded = msgspec.json.decode(row)
    assert (decoded["time"], decoded["subject"]) == ("2026-12-04T22:30:00", "u")
    assert decoded["event"] == msgspec.json.decode(event)
    # What an input transformer made of an event need not be JSON.
    _, row = row_of(msgspec.structs.replace(delivery(2), payload=b"order 42 \xff"))
    decoded = msgspec.json.decode(row)
    assert (decoded["event"], decoded["type"], decoded["time"]) == ("order 42 \ufffd", None, None)


async def test_a_partition_that_cannot_be_written_holds_up_no_other_and_is_written_later(
    tmp_path: Path,
) -> None:
    lake = tmp_path / "lake"
    spool = Spool(tmp_path / "spool.db")
    writer = LakeWriter(spool, str(lake), tmp_path / "scratch", retry_seconds=0.0)
    try:
        for tenant in ("broken", "fine"):
            partition, row = row_of(delivery(1, tenant))
            await spool.stage(Staged(f"{tenant}/default/r/lake", partition, "e1", "s", row))
        # A file where the broken tenant's directory should be: its file cannot be made.
        lake.mkdir()
        (lake / "tenant=broken").write_text("in the way")
        assert await writer.step(everything=True) == 1
        assert [p.parts[-4] for p in lake.rglob("*.parquet")] == ["tenant=fine"]
        (claim,) = await spool.claimed()
        assert claim.target == "broken/default/r/lake"
        # Mended: the claim is written at the next step, the same rows under the same name.
        (lake / "tenant=broken").unlink()
        assert await writer.step() == 1
        assert await spool.claimed() == []
        assert (lake / claim.partition / claim.file).exists()
    finally:
        await spool.close()


async def test_an_idle_writer_reads_nothing_from_the_spool_after_its_first_step(
    tmp_path: Path,
) -> None:
    # Five ticks a second each read the claims and the parameters with nothing staged: most of
    # what an idle pipeline process spent on the lake. The first step still finishes what a
    # crash left; a staged row is rolled as before.
    lake = tmp_path / "lake"
    spool = Spool(tmp_path / "spool.db")
    reads: list[str] = []
    claimed, parameters = spool.claimed, spool.parameters

    async def counted_claimed() -> Any:
        reads.append("claimed")
        return await claimed()

    async def counted_parameters() -> Any:
        reads.append("parameters")
        return await parameters()

    spool.claimed = counted_claimed  # type: ignore[method-assign]
    spool.parameters = counted_parameters  # type: ignore[method-assign]
    writer = LakeWriter(spool, str(lake), tmp_path / "scratch")
    try:
        assert await writer.step() == 0
        assert reads == ["claimed"]
        for _ in range(3):
            assert await writer.step() == 0
        assert reads == ["claimed"]
        await spool.stage(staged(0))
        assert await writer.step(everything=True) == 1
        assert [p.suffix for p in lake.rglob("*") if p.is_file()] == [".parquet"]
    finally:
        await spool.close()


@contextlib.asynccontextmanager
async def running_writer(tmp_path: Path) -> AsyncIterator[tuple[Spool, LakeWriter, Path]]:
    """A writer at work over a fresh spool, stopped (and the spool closed) after."""
    lake = tmp_path / "lake"
    spool = Spool(tmp_path / "spool.db")
    writer = LakeWriter(spool, str(lake), tmp_path / "scratch")
    running = asyncio.create_task(writer.run())
    try:
        yield spool, writer, lake
    finally:
        writer.stop()
        await running
        await spool.close()


async def test_an_idle_writer_waits_for_rows_and_wakes_only_when_something_falls_due(
    tmp_path: Path,
) -> None:
    # It woke 5 times a second with nothing to do; now it waits for a row to be staged, or for
    # the time the oldest staged row's partition rolls.
    async with running_writer(tmp_path) as (spool, writer, lake):
        await eventually(lambda: writer.parked, what="the first step done")
        assert (writer.rounds, writer.waits) == (1, None)  # nothing timed to wait for
        await asyncio.sleep(1.0)  # an idle second: no wake-up in it (the tick made five)
        assert writer.rounds == 1

        # The first row of a partition: one wake-up, then a wait until the partition rolls.
        key = staged(1).target
        await spool.remember(key, msgspec.json.encode(LakeParameters(roll_rows=3)))
        await spool.stage(staged(1))
        await eventually(lambda: writer.rounds == 2 and writer.parked, what="the row taken in")
        assert writer.waits is not None
        assert 290 < writer.waits <= 300  # roll_seconds' default

        # A row that makes nothing due wakes nothing (the staging told the writer just now).
        await spool.stage(staged(2))
        assert writer.parked
        assert writer.rounds == 2
        assert not lake.exists()

        # The third row reaches roll_rows: that staging wakes the writer, which rolls.
        await spool.stage(staged(3))
        await eventually(lambda: list(lake.rglob("*.parquet")), what="the file rolled")
        await eventually(lambda: writer.parked, what="the writer waiting again")
        assert writer.rounds == 3
        assert writer.waits is not None
        assert writer.waits > 3600  # only the tombstones' pruning


async def test_the_writer_wakes_when_a_partition_has_waited_its_roll_seconds(
    tmp_path: Path,
) -> None:
    async with running_writer(tmp_path) as (spool, _, lake):
        key = staged(1).target
        await spool.remember(key, msgspec.json.encode(LakeParameters(roll_seconds=0.1)))
        await spool.stage(staged(1))
        await eventually(lambda: list(lake.rglob("*.parquet")), what="the file rolled by time")
        assert spool.backlog() == []

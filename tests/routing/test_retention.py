"""Retention on a real control plane, event log and delivery queue (SQLite files in tmp_path)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from tests.delivery.queue_support import new_delivery
from tests.storage.eventlog_support import MovableClock, new_event

from stellwerk.clock import to_us
from stellwerk.ops.metrics import Metrics
from stellwerk.refs import BusRef, TenantName
from stellwerk.retention import Retention, RetentionMetrics
from stellwerk.seams import Attempt
from stellwerk.storage.control import ControlPlane
from stellwerk.storage.eventlog.sqlite import SqliteEventLog
from stellwerk.storage.queue.sqlite import SqliteDeliveryQueue
from stellwerk.storage.sqlite import LOG_DIR, PIPELINE_FILE

ACME_DEFAULT = BusRef(TenantName("acme"), "default")

WEEK = timedelta(days=7)


@dataclass
class Stores:
    control: ControlPlane
    log: SqliteEventLog
    queue: SqliteDeliveryQueue
    clock: MovableClock
    metrics: Metrics


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[Stores]:
    clock = MovableClock()
    control = await ControlPlane.open(f"sqlite+aiosqlite:///{tmp_path / 'control.db'}")
    await control.create_tenant("acme")
    log = SqliteEventLog(tmp_path / LOG_DIR, clock=clock)
    queue = SqliteDeliveryQueue(tmp_path / PIPELINE_FILE)
    async with log, queue:
        yield Stores(control, log, queue, clock, Metrics())
    await control.close()


async def _append_each(stores: Stores, ids: list[str]) -> list[int]:
    """One append per event: each its own segment, so trims can tell them apart."""
    return [(await stores.log.append([new_event(i)]))[0].position for i in ids]


def _retention(stores: Stores, floors: dict[BusRef, int] | None = None) -> Retention:
    async def archive_floors() -> dict[BusRef, int]:
        return dict(floors or {})

    return Retention(
        stores.control,
        stores.log,
        stores.queue,
        log_retention=WEEK,
        interval=60,
        archive_floors=archive_floors if floors is not None else None,
        metrics=RetentionMetrics(stores.metrics),
        clock=stores.clock,
        history=stores.queue,
    )


async def test_old_events_go_once_routed_and_unrouted_ones_stay(stores: Stores) -> None:
    positions = await _append_each(stores, ["e1", "e2", "e3", "e4"])
    await stores.queue.route(ACME_DEFAULT, positions[1], [])  # e1, e2 routed
    stores.clock.advance(WEEK + timedelta(days=1))
    await _append_each(stores, ["fresh"])

    done = await _retention(stores).run_once()

    assert done.log_events == 2
    left = [e.id for e in await stores.log.read(ACME_DEFAULT)]
    assert left == ["e3", "e4", "fresh"]
    assert (
        stores.metrics.registry.get_sample_value(
            "stellwerk_retention_trimmed_events_total", {"store": "log"}
        )
        == 2
    )


async def test_events_younger_than_the_retention_stay_even_when_routed(stores: Stores) -> None:
    positions = await _append_each(stores, ["e1", "e2"])
    await stores.queue.route(ACME_DEFAULT, positions[-1], [])
    stores.clock.advance(WEEK - timedelta(hours=1))

    assert (await _retention(stores).run_once()).log_events == 0
    assert len(await stores.log.read(ACME_DEFAULT)) == 2


async def test_an_archiver_behind_the_router_keeps_its_events(stores: Stores) -> None:
    positions = await _append_each(stores, ["e1", "e2", "e3"])
    await stores.queue.route(ACME_DEFAULT, positions[-1], [])
    stores.clock.advance(WEEK + timedelta(days=1))

    retention = _retention(stores, floors={ACME_DEFAULT: positions[0]})
    assert await retention.keep_positions() == {ACME_DEFAULT: positions[0]}
    assert (await retention.run_once()).log_events == 1
    assert [e.id for e in await stores.log.read(ACME_DEFAULT)] == [
        "e2",
        "e3",
    ]


async def test_delivery_history_is_kept_as_long_as_the_log(stores: Stores) -> None:
    (position,) = await _append_each(stores, ["e1"])
    await stores.queue.route(ACME_DEFAULT, position, [new_delivery(position)])
    (leased,) = await stores.queue.lease(stores.clock(), 1, 30)
    attempt = Attempt(
        leased.tenant, leased.bus, leased.rule, leased.target_id, leased.event_id,
        leased.position, 1, to_us(stores.clock()), 10, "delivered",
    )  # fmt: skip
    await stores.queue.ack_many([leased.id], [attempt])
    retention = _retention(stores)
    stores.clock.advance(WEEK - timedelta(seconds=1))
    await retention.run_once()
    assert len(await stores.queue.event_attempts(ACME_DEFAULT, "e1")) == 1
    stores.clock.advance(timedelta(seconds=2))
    await retention.run_once()
    assert await stores.queue.event_attempts(ACME_DEFAULT, "e1") == []
    assert (
        stores.metrics.registry.get_sample_value(
            "stellwerk_retention_trimmed_events_total", {"store": "history"}
        )
        == 1
    )

"""The bus target on a real event log: what the next bus receives."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from stellwerk.delivery.bus_target import HOPS, BusTarget
from stellwerk.delivery.model import Delivered
from stellwerk.refs import BusRef, TenantName
from stellwerk.seams import Delivery
from stellwerk.storage.eventlog.sqlite import SqliteEventLog
from stellwerk.storage.sqlite import LOG_DIR


@pytest.fixture
async def event_log(tmp_path: Path) -> AsyncIterator[SqliteEventLog]:
    async with SqliteEventLog(tmp_path / LOG_DIR) as log:
        yield log


def _delivery(payload: dict[str, str]) -> Delivery:
    return Delivery(
        id=1,
        tenant=TenantName("acme"),
        bus="orders",
        rule="copy",
        target_id="t",
        event_id=payload["id"],
        event_source=payload["source"],
        position=1,
        recorded_time=datetime.now(UTC),
        payload=msgspec.json.encode(payload),
        content_type="application/cloudevents+json",
        attempts=0,
    )


async def _allowed() -> str | None:
    return None


async def test_a_replayed_event_keeps_its_replay_mark_on_the_next_bus(
    event_log: SqliteEventLog,
) -> None:
    appended: list[tuple[str, str]] = []
    target = BusTarget(
        event_log,
        TenantName("acme"),
        "audit",
        lambda b: appended.append((b.tenant, b.bus)),
        _allowed,
    )
    event = {
        "specversion": "1.0",
        "id": "e1",
        "source": "/orders",
        "type": "order.created",
        "tenant": "acme",
        "bus": "orders",
        "recordedtime": "2026-11-27T00:00:00Z",
        "replayname": "backfill",
    }

    outcome = await target.deliver(_delivery(event))

    assert isinstance(outcome, Delivered)
    assert appended == [("acme", "audit")]
    (stored,) = await event_log.read(BusRef(TenantName("acme"), "audit"))
    body = msgspec.json.decode(stored.body)
    assert body["replayname"] == "backfill"
    assert body["bus"] == "audit"
    assert body[HOPS] == 1


async def test_a_live_event_gets_no_replay_mark(event_log: SqliteEventLog) -> None:
    target = BusTarget(event_log, TenantName("acme"), "audit", lambda b: None, _allowed)
    event = {"specversion": "1.0", "id": "e1", "source": "/orders", "type": "order.created"}

    await target.deliver(_delivery(event))

    (stored,) = await event_log.read(BusRef(TenantName("acme"), "audit"))
    assert "replayname" not in msgspec.json.decode(stored.body)

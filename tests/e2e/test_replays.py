"""Archive -> replay -> deliver, through the whole app, to real HTTP receivers on loopback."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from tests.conftest import Bootstrap, RunningApp
from tests.e2e.conftest import Receiver
from tests.e2e.test_delivery import put_rule, send
from tests.polling import eventually

from stellwerk.app import build_app
from stellwerk.config import load_settings
from stellwerk.events import format_rfc3339
from stellwerk.refs import BusRef, TenantName

EVENTS = 60
ORDER = {"specversion": "1.0", "source": "urn:shop", "type": "order.created"}


async def archive(app: RunningApp, bus: str = "default", name: str = "all") -> None:
    response = await app.client.put(f"/v1/buses/{bus}/archives/{name}", json={}, headers=app.admin)
    assert response.status_code == 201, response.text


async def archived(app: RunningApp, bus: str = "default", name: str = "all") -> int:
    response = await app.client.get(f"/v1/buses/{bus}/archives/{name}", headers=app.admin)
    count: int = response.json()["events"]
    return count


async def wait_archived(app: RunningApp, count: int) -> None:
    async def enough() -> bool:
        return await archived(app) >= count

    await eventually(enough)


async def start_replay(app: RunningApp, since: datetime, **body: Any) -> dict[str, Any]:
    window = {"start": format_rfc3339(since), "end": format_rfc3339(datetime.now(UTC))}
    request = {"archive": "all", "bus": "default", **window, **body}
    response = await app.client.post("/v1/replays", json=request, headers=app.admin)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def replay_status(app: RunningApp, name: str) -> dict[str, Any]:
    response = await app.client.get(f"/v1/replays/{name}", headers=app.admin)
    assert response.status_code == 200, response.text
    status: dict[str, Any] = response.json()
    return status


async def wait_state(app: RunningApp, name: str, *states: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def reached() -> bool:
        seen.update(await replay_status(app, name))
        return seen["state"] in states

    await eventually(reached)
    return seen


async def test_a_replay_reaches_the_chosen_rule_with_replayname(
    delivering_app: RunningApp, receiver_factory: Any
) -> None:
    app = delivering_app
    backfill: Receiver = await receiver_factory(None)
    live: Receiver = await receiver_factory(None)
    since = datetime.now(UTC) - timedelta(seconds=1)
    await archive(app)
    await put_rule(app, "live", {"pattern": {"source": ["urn:shop"]}, "targets": [hook(live.url)]})
    await send(app, *({**ORDER, "id": f"o{n}", "data": {"n": n}} for n in range(5)))
    await send(app, {**ORDER, "id": "other", "type": "order.paid"})
    await live.wait_for(6)
    await wait_archived(app, 6)
    head = await app.services.stores.event_log.last_position(
        BusRef(TenantName("default"), "default")
    )

    # A new destination, backfilled: only its rule gets the replay, the live rule does not.
    await put_rule(
        app,
        "new-destination",
        {"pattern": {"type": ["order.created"]}, "targets": [hook(backfill.url)]},
    )
    created = await start_replay(app, since, name="backfill", rules=["new-destination"])
    assert created["total"] in (0, 6)  # counted once the replay starts
    done = await wait_state(app, "backfill", "completed")
    assert (done["replayed"], done["total"]) == (6, 6)
    await backfill.wait_for(5)
    bodies = backfill.bodies()
    assert sorted(b["id"] for b in bodies) == [f"o{n}" for n in range(5)]
    assert {b["replayname"] for b in bodies} == {"backfill"}
    assert {h["webhook-id"] for h, _ in backfill.received} == {f"o{n}" for n in range(5)}
    assert all("replayname" not in b for b in live.bodies())

    # Replays never pass through the log, so no archive sees them again.
    assert (
        await app.services.stores.event_log.last_position(BusRef(TenantName("default"), "default"))
        == head
    )
    assert await archived(app) == 6
    metrics = (await app.client.get("/metrics")).text
    assert 'stellwerk_replayed_events_total{tenant="default"} 6.0' in metrics


def hook(url: str) -> dict[str, Any]:
    return {"id": "hook", "type": "http", "url": url}


async def test_all_rules_by_default_and_patterns_can_exclude_replays(
    delivering_app: RunningApp, receiver_factory: Any
) -> None:
    app = delivering_app
    receiver: Receiver = await receiver_factory(None)
    since = datetime.now(UTC) - timedelta(seconds=1)
    await archive(app)
    await send(app, *({**ORDER, "id": f"o{n}"} for n in range(3)))
    await wait_archived(app, 3)
    await put_rule(
        app, "orders", {"pattern": {"type": ["order.created"]}, "targets": [hook(receiver.url)]}
    )
    await put_rule(
        app,
        "live-only",
        {"pattern": {"replayname": [{"exists": False}]}, "targets": [hook(receiver.url)]},
    )
    await start_replay(app, since, name="everything")
    await wait_state(app, "everything", "completed")
    await receiver.wait_for(3)
    assert Counter(b["id"] for b in receiver.bodies()) == Counter({"o0": 1, "o1": 1, "o2": 1})


@pytest.fixture
async def slow_replays(tmp_path: Path) -> AsyncIterator[RunningApp]:
    """The whole app with replays held to 20 events/s, so that one is still running when
    cancelled."""
    settings = load_settings(
        {
            "data_dir": str(tmp_path / "data"),
            "allow_private_targets": "true",
            "replay_rate": "20",
            "max_concurrent_replays": "1",
        }
    )
    app = build_app(settings)
    async with app.router.lifespan_context(app):
        services = await asyncio.wait_for(app.state.lifecycle.wait_started(), 30)
        keys = msgspec.json.decode(
            (settings.data_dir / "bootstrap.json").read_bytes(), type=Bootstrap
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://stellwerk") as client:
            yield RunningApp(client, services, settings, keys)


async def test_cancel_stops_a_replay_and_a_queued_one_takes_its_slot(
    slow_replays: RunningApp, receiver_factory: Any
) -> None:
    app = slow_replays
    receiver: Receiver = await receiver_factory(None)
    since = datetime.now(UTC) - timedelta(seconds=1)
    await archive(app)
    await send(app, *({**ORDER, "id": f"o{n}"} for n in range(EVENTS)))
    await wait_archived(app, EVENTS)
    rule = {"pattern": {"type": ["order.created"]}, "targets": [hook(receiver.url)]}
    await put_rule(app, "orders", rule)
    first = await start_replay(app, since, name="first")
    second = await start_replay(app, since, name="second")
    assert (first["state"], second["state"]) == ("running", "queued")
    listed = await app.client.get("/v1/replays?state=queued", headers=app.admin)
    assert [r["name"] for r in listed.json()["replays"]] == ["second"]

    await receiver.wait_for(3)  # under way: the window takes three seconds at 20 events/s
    cancelled = await app.client.delete("/v1/replays/first", headers=app.admin)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["state"] == "cancelled"
    assert cancelled.json()["finished_at"] is not None
    # Its slot goes to the queued replay, which runs to its end: had the first not stopped, it
    # would have ended meanwhile as well.
    done = await wait_state(app, "second", "completed")
    assert (done["replayed"], done["total"]) == (EVENTS, EVENTS)
    stopped = await replay_status(app, "first")
    assert stopped["state"] == "cancelled"
    assert 0 < stopped["replayed"] < EVENTS
    await receiver.wait_for(stopped["replayed"] + EVENTS)
    assert len(receiver.received) == stopped["replayed"] + EVENTS
    # Cancelling again changes nothing; a completed replay cannot be cancelled.
    assert (await app.client.delete("/v1/replays/first", headers=app.admin)).status_code == 200
    refused = await app.client.delete("/v1/replays/second", headers=app.admin)
    assert refused.status_code == 409
    assert "completed" in refused.json()["message"]

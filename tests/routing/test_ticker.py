"""Scheduled rules through the whole app: a tick becomes one Scheduled Event on the rule's bus,
sent to that rule's targets alone (a pattern rule for `aws.events` never sees it); a tick made
again (another round, a new ticker after a restart) is the same event, deduplicated; ticks
missed beyond the grace are skipped."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web
from tests.conftest import RunningApp, app_running, free_port
from tests.polling import eventually

from stellwerk.config import load_settings
from stellwerk.refs import BusRef, TenantName
from stellwerk.routing import RuleTicker


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[RunningApp]:
    settings = load_settings({"data_dir": str(tmp_path / "data"), "allow_private_targets": "true"})
    async with app_running(settings) as running:
        yield running


@pytest.fixture
async def received() -> AsyncIterator[tuple[str, list[tuple[str, dict[str, Any]]]]]:
    got: list[tuple[str, dict[str, Any]]] = []

    async def handle(request: web.Request) -> web.Response:
        got.append((request.path, msgspec.json.decode(await request.read())))
        return web.Response(status=204)

    server = web.Application()
    server.router.add_post("/{name}", handle)
    runner = web.AppRunner(server)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", got
    finally:
        await runner.cleanup()


async def test_a_tick_goes_to_its_rule_alone_once(
    app: RunningApp, received: tuple[str, list[tuple[str, dict[str, Any]]]]
) -> None:
    url, got = received
    hourly = {
        "schedule": "rate(1 hour)",
        "targets": [{"id": "t", "type": "http", "url": f"{url}/hourly"}],
    }
    saved = await app.client.put("/v1/buses/default/rules/hourly", json=hourly, headers=app.admin)
    assert saved.status_code == 201, saved.text
    assert saved.json()["schedule"] == "rate(1 hour)"
    assert "pattern" not in saved.json() or saved.json()["pattern"] is None
    onlooker = {
        "pattern": {"source": ["aws.events"]},
        "targets": [{"id": "t", "type": "http", "url": f"{url}/onlooker"}],
    }
    saved = await app.client.put("/v1/buses/default/rules/aws", json=onlooker, headers=app.admin)
    assert saved.status_code == 201, saved.text
    ready = await app.client.get("/v1/buses/default/rules/hourly", headers=app.admin)
    created = msgspec.json.decode(ready.content)["created_at"]
    services = app.services
    ticker = RuleTicker(services.stores.control, services.platform.ingest.publish)
    anchor = msgspec.convert(created, type=datetime)
    tick = anchor.replace(second=0, microsecond=0) + timedelta(hours=1)
    # The first look sees the grace before it: nothing due yet, then the tick.
    assert await ticker.step(tick - timedelta(seconds=30)) == 0
    assert await ticker.step(tick + timedelta(seconds=5)) == 1
    assert await ticker.step(tick + timedelta(seconds=6)) == 0
    # A new ticker (a restart, another process) within the grace makes the tick again ...
    again = RuleTicker(services.stores.control, services.platform.ingest.publish)
    assert await again.step(tick + timedelta(seconds=20)) == 1
    await eventually(lambda: got, what="the scheduled event delivered")
    path, event = got[0]
    assert path == "/hourly"
    assert (event["source"], event["type"], event["subject"]) == (
        "aws.events",
        "Scheduled Event",
        "hourly",
    )
    assert event["time"] == tick.strftime("%Y-%m-%dT%H:%M:%SZ")
    # ... and the log keeps it once (delivery is at least once: a copy at the receiver would be
    # a retry of the same event, never a second one).
    bus = BusRef(TenantName(app.bootstrap.tenant), "default")
    stored = await services.stores.event_log.read(bus, after=0, limit=100)
    assert [e.type for e in stored] == ["Scheduled Event"]
    # A native event from aws.events is no tick: the pattern rule gets it, the scheduled one not.
    marker = {"specversion": "1.0", "id": "m-1", "source": "aws.events", "type": "marker"}
    sent = await app.client.post(
        "/v1/buses/default/events", json=marker, headers=app.auth(app.bootstrap.ingest_key)
    )
    assert sent.status_code == 202, sent.text
    await eventually(lambda: any(p == "/onlooker" for p, _ in got), what="the marker")
    assert {(p, e["id"]) for p, e in got} == {("/hourly", event["id"]), ("/onlooker", "m-1")}
    # Ticks missed beyond the grace are skipped, not sent late.
    late = RuleTicker(services.stores.control, services.platform.ingest.publish)
    assert await late.step(tick + timedelta(hours=1, minutes=5)) == 0


async def test_a_rule_has_a_pattern_or_a_schedule(app: RunningApp) -> None:
    both = {"pattern": {"source": ["x"]}, "schedule": "rate(1 hour)"}
    answer = await app.client.put("/v1/buses/default/rules/both", json=both, headers=app.admin)
    assert answer.status_code == 400
    assert answer.json()["field"] == "pattern"
    bad = {"schedule": "rate(1 hours)"}
    answer = await app.client.put("/v1/buses/default/rules/bad", json=bad, headers=app.admin)
    assert answer.status_code == 400
    assert answer.json()["error"] == "InvalidScheduleExpression"
    assert answer.json()["field"] == "schedule"


async def test_with_the_rule_books_version_the_rules_are_read_again_only_after_a_change(
    app: RunningApp, received: tuple[str, list[tuple[str, dict[str, Any]]]]
) -> None:
    # Read every second, the scheduled rules were one control-plane query a second in every
    # idle pipeline process; now a saved rule moves the rule book's version, and that is read.
    url, _got = received
    services = app.services
    control = services.stores.control
    reads: list[int] = []
    scheduled = control.rules.scheduled

    async def counted() -> Any:
        reads.append(1)
        return await scheduled()

    control.rules.scheduled = counted  # type: ignore[method-assign]
    ticker = RuleTicker(
        control, services.platform.ingest.publish, version=services.pipeline.rulebook.version
    )
    now = datetime.now(UTC)
    assert await ticker.step(now) == 0
    assert await ticker.step(now + timedelta(seconds=1)) == 0
    assert len(reads) == 1
    minutely = {
        "schedule": "rate(1 minute)",
        "targets": [{"id": "t", "type": "http", "url": f"{url}/minutely"}],
    }
    saved = await app.client.put(
        "/v1/buses/default/rules/minutely", json=minutely, headers=app.admin
    )
    assert saved.status_code == 201, saved.text
    # The API answers once the rule book took the change in: the next round reads the rules.
    assert await ticker.step(now + timedelta(minutes=2)) == 1
    assert len(reads) == 2

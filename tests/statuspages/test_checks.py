"""Synthetic checks over the whole app: the admin API and its refusals, and the runner probing
a real HTTP server on loopback that answers, fails, slows down and recovers, which moves the
check's state and its linked component's status, with every result stored and published."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from tests.conftest import RunningApp, app_running
from tests.delivery.targets.support import Receiver, start_receiver
from tests.polling import eventually
from tests.statuspages.support import internal_events

from stellwerk.config import load_settings
from stellwerk.statuspages.checks import CHECK_CHANGED, CHECK_COMPLETED


async def test_checks_api_and_its_refusals(running_app: RunningApp) -> None:
    app = running_app
    put = app.client.put
    # Without --allow-private-targets, loopback is refused as deliveries refuse it.
    private = await put("/v1/checks/api", headers=app.admin, json={"url": "http://127.0.0.1/"})
    assert private.status_code == 422
    assert private.json()["error"] == "UnsafeUrl"
    assert private.json()["field"] == "$.url"
    assert "loopback" in private.json()["message"]
    scheme = await put("/v1/checks/api", headers=app.admin, json={"url": "ftp://example.com/"})
    assert scheme.status_code == 422
    interval = await put(
        "/v1/checks/api",
        headers=app.admin,
        json={"url": "https://example.com/", "interval_seconds": 0.1},
    )
    assert interval.status_code == 422
    assert interval.json()["field"] == "$.interval_seconds"
    half_link = await put(
        "/v1/checks/api", headers=app.admin, json={"url": "https://example.com/", "page": "p"}
    )
    assert half_link.status_code == 422
    assert half_link.json()["field"] == "$.component"
    no_component = await put(
        "/v1/checks/api",
        headers=app.admin,
        json={"url": "https://example.com/", "page": "p", "component": "c"},
    )
    assert no_component.status_code == 404

    created = await put(
        "/v1/checks/api",
        headers=app.admin,
        json={"url": "https://example.com/health", "interval_seconds": 3600, "enabled": False},
    )
    assert created.status_code == 201, created.text
    assert created.json()["state"] == "unknown"
    assert created.json()["method"] == "GET"
    assert (
        await put(
            "/v1/checks/api",
            headers=app.admin,
            json={"url": "https://example.com/ready", "interval_seconds": 3600, "enabled": False},
        )
    ).status_code == 200
    listed = (await app.client.get("/v1/checks", headers=app.admin)).json()["checks"]
    assert [(c["name"], c["url"]) for c in listed] == [("api", "https://example.com/ready")]
    results = await app.client.get("/v1/checks/api/results", headers=app.admin)
    assert results.json() == {"results": []}
    bad_since = await app.client.get("/v1/checks/api/results?since=yesterday", headers=app.admin)
    assert bad_since.status_code == 400
    assert bad_since.json()["field"] == "since"
    assert (await app.client.delete("/v1/checks/api", headers=app.admin)).status_code == 204
    assert (await app.client.get("/v1/checks/api", headers=app.admin)).status_code == 404
    assert (await app.client.get("/v1/checks/api/results", headers=app.admin)).status_code == 404


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver, runner = await start_receiver("127.0.0.1")
    try:
        yield receiver
    finally:
        receiver.closing.set()
        await runner.cleanup()


@pytest.fixture
async def checking_app(tmp_path: Path) -> AsyncIterator[RunningApp]:
    settings = load_settings({"data_dir": str(tmp_path / "data"), "allow_private_targets": True})
    async with app_running(settings) as running:
        yield running


async def test_failures_recovery_and_slowness_move_the_linked_component(
    checking_app: RunningApp, receiver: Receiver
) -> None:
    app = checking_app
    mode = {"now": "ok"}

    async def health(_request: web.Request) -> web.StreamResponse:
        if mode["now"] == "fail":
            return web.Response(status=503, text="down")
        if mode["now"] == "slow":
            await asyncio.sleep(0.3)
        return web.Response(text="all good")

    receiver.on("/health", health)
    assert (
        await app.client.put("/v1/status-pages/acme", headers=app.admin, json={"title": "Acme"})
    ).status_code == 201
    assert (
        await app.client.put("/v1/status-pages/acme/components/api", headers=app.admin, json={})
    ).status_code == 201
    spec = {
        "url": receiver.url("/health"),
        "interval_seconds": 1,
        "timeout_seconds": 2,
        "expect_body": "good",
        "latency_threshold_ms": 200,
        "failures_to_open": 2,
        "page": "acme",
        "component": "api",
    }
    assert (await app.client.put("/v1/checks/api", headers=app.admin, json=spec)).status_code == 201

    async def check() -> dict[str, Any]:
        response = await app.client.get("/v1/checks/api", headers=app.admin)
        body: dict[str, Any] = response.json()
        return body

    async def component() -> str:
        response = await app.client.get("/v1/status-pages/acme/components/api", headers=app.admin)
        status: str = response.json()["status"]
        return status

    up = await eventually(check, accept=lambda c: c["state"] == "up")
    assert up["last_error"] is None
    assert up["last_latency_ms"] < 200

    mode["now"] = "fail"
    down = await eventually(check, accept=lambda c: c["state"] == "down", within=15)
    assert down["consecutive_failures"] >= 2
    assert "503" in down["last_error"]
    await eventually(component, accept=lambda s: s == "major_outage")

    async def incidents() -> list[dict[str, Any]]:
        response = await app.client.get("/v1/status-pages/acme/incidents", headers=app.admin)
        found: list[dict[str, Any]] = response.json()["incidents"]
        return found

    # Down opens one incident on the component...
    opened = await eventually(incidents, accept=lambda found: len(found) == 1)
    assert opened[0]["name"] == "api is failing"
    assert opened[0]["status"] == "investigating"
    assert "503" in opened[0]["updates"][-1]["body"]

    mode["now"] = "slow"
    await eventually(check, accept=lambda c: c["state"] == "degraded", within=15)
    # ... which the recovery resolves, the component keeping what the check says now.
    await eventually(incidents, accept=lambda found: found[0]["status"] == "resolved")
    assert len(await incidents()) == 1
    await eventually(component, accept=lambda s: s == "degraded_performance")

    mode["now"] = "ok"
    await eventually(check, accept=lambda c: c["state"] == "up", within=15)
    await eventually(component, accept=lambda s: s == "operational")

    results = (await app.client.get("/v1/checks/api/results", headers=app.admin)).json()["results"]
    assert any(not r["ok"] and r["status_code"] == 503 for r in results)
    assert any(r["ok"] and r["latency_ms"] >= 300 for r in results)
    # A run stores its result, then publishes its events: wait for those of the runs seen.
    completed = await eventually(
        lambda: internal_events(app, CHECK_COMPLETED), accept=lambda c: len(c) >= len(results)
    )
    assert all(e["subject"] == "api" for e in completed)

    async def changes() -> list[tuple[str, str]]:
        return [
            (e["data"]["old_state"], e["data"]["new_state"])
            for e in await internal_events(app, CHECK_CHANGED)
        ]

    assert await eventually(changes, accept=lambda c: len(c) >= 4) == [
        ("unknown", "up"),
        ("up", "down"),
        ("down", "degraded"),
        ("degraded", "up"),
    ]
    # Every probe reached the server: no run was skipped or doubled (one runner in the process).
    assert len([s for s in receiver.seen if s.path == "/health"]) >= len(results)

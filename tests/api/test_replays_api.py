"""The replay API's checks, on SQLite and PostgreSQL: each bad request is a 4xx naming the problem.

What a replay does once started is tested end to end in tests/e2e/test_replays.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tests.conftest import RunningApp

from stellwerk.auth import Scope
from stellwerk.events import format_rfc3339

RULE = {"pattern": {"type": ["order.created"]}, "targets": [{"id": "log", "type": "log"}]}


def ago(**delta: float) -> str:
    return format_rfc3339(datetime.now(UTC) - timedelta(**delta))


def replay(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "backfill",
        "archive": "orders",
        "bus": "default",
        "start": ago(hours=2),
        "end": ago(minutes=1),
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


@pytest.fixture
async def app(running_app: RunningApp) -> RunningApp:
    client, admin = running_app.client, running_app.admin
    assert (
        await client.put("/v1/buses/default/archives/orders", json={}, headers=admin)
    ).is_success
    assert (await client.put("/v1/buses/other", headers=admin)).is_success
    for bus, rule in (("default", "orders"), ("default", "audit"), ("other", "elsewhere")):
        response = await client.put(f"/v1/buses/{bus}/rules/{rule}", json=RULE, headers=admin)
        assert response.status_code == 201, response.text
    return running_app


async def test_a_replay_is_created_and_shown(app: RunningApp) -> None:
    body = replay(rules=["orders", "orders"], description="new webhook")
    response = await app.client.post("/v1/replays", json=body, headers=app.admin)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["name"] == "backfill"
    assert created["state"] in ("running", "completed")
    assert created["rules"] == ["orders"]  # named twice, replayed once
    assert created["description"] == "new webhook"
    assert set(created) >= {"replayed", "total", "created_at", "updated_at", "finished_at"}
    shown = await app.client.get("/v1/replays/backfill", headers=app.admin)
    assert shown.status_code == 200
    assert shown.json()["start"] == created["start"]
    listed = await app.client.get("/v1/replays", headers=app.admin)
    assert [r["name"] for r in listed.json()["replays"]] == ["backfill"]


@pytest.mark.parametrize(
    ("changes", "field", "reason"),
    [
        ({"start": ago(minutes=1), "end": ago(hours=2)}, "end", "empty or reversed"),
        ({"start": "2025-06-01T00:00:00Z", "end": "2025-06-01T00:00:00Z"}, "end", "empty"),
        ({"end": format_rfc3339(datetime.now(UTC) + timedelta(hours=1))}, "end", "future"),
        ({"start": "yesterday"}, "start", "RFC 3339"),
        ({"end": "2026-02-30T00:00:00Z"}, "end", "RFC 3339"),
        ({"start": "2026-01-01 00:00:00"}, "start", "RFC 3339"),
        ({"start": "0001-01-01T00:00:00+23:00"}, "start", "RFC 3339"),
        ({"archive": "missing"}, "archive", "archive 'missing' does not exist on bus 'default'"),
        ({"bus": "other"}, "archive", "archive 'orders' does not exist on bus 'other'"),
        ({"bus": "nowhere"}, "bus", "bus 'nowhere' does not exist"),
        ({"rules": ["orders", "ghost"]}, "rules", "rule 'ghost' does not exist on bus 'default'"),
        ({"rules": ["elsewhere"]}, "rules", "rule 'elsewhere' is a rule of bus 'other'"),
        ({"name": "no spaces"}, "name", "must match"),
        ({"rules": ["bad name!"]}, "rules", "must match"),
    ],
)
async def test_bad_requests_are_400_with_the_reason(
    app: RunningApp, changes: dict[str, Any], field: str, reason: str
) -> None:
    response = await app.client.post("/v1/replays", json=replay(**changes), headers=app.admin)
    assert response.status_code == 400, response.text
    error = response.json()
    assert (error["error"], error["field"]) == ("InvalidRequest", field)
    assert reason in error["message"]
    assert (await app.client.get("/v1/replays", headers=app.admin)).json()["replays"] == []


async def test_malformed_bodies_are_refused(app: RunningApp) -> None:
    post = app.client.post
    assert (await post("/v1/replays", json=replay(rules=[]), headers=app.admin)).status_code == 422
    assert (await post("/v1/replays", json=replay(extra=1), headers=app.admin)).status_code == 422
    assert (await post("/v1/replays", json={"name": "x"}, headers=app.admin)).status_code == 422
    response = await post("/v1/replays", content=b"{", headers=app.admin)
    assert response.status_code == 400


async def test_a_name_is_used_once(app: RunningApp) -> None:
    first = await app.client.post("/v1/replays", json=replay(), headers=app.admin)
    assert first.status_code == 201
    again = await app.client.post("/v1/replays", json=replay(), headers=app.admin)
    assert again.status_code == 409
    assert again.json()["error"] == "ResourceAlreadyExists"


async def test_unknown_replays_and_scopes(app: RunningApp) -> None:
    missing = await app.client.get("/v1/replays/nope", headers=app.admin)
    assert missing.status_code == 404
    assert (await app.client.delete("/v1/replays/nope", headers=app.admin)).status_code == 404
    ingest = app.auth(app.bootstrap.ingest_key)
    assert (await app.client.post("/v1/replays", json=replay(), headers=ingest)).status_code == 403
    bad_state = await app.client.get("/v1/replays?state=sleeping", headers=app.admin)
    assert bad_state.status_code == 400
    assert bad_state.json()["field"] == "state"


async def test_replays_of_other_tenants_are_invisible(app: RunningApp) -> None:
    assert (await app.client.post("/v1/replays", json=replay(), headers=app.admin)).is_success
    other = await app.services.stores.control.create_tenant("globex")
    _, key = await app.services.stores.control.create_key(other.id, Scope.ADMIN)
    headers = app.auth(key)
    assert (await app.client.get("/v1/replays/backfill", headers=headers)).status_code == 404
    assert (await app.client.get("/v1/replays", headers=headers)).json()["replays"] == []
    assert (await app.client.delete("/v1/replays/backfill", headers=headers)).status_code == 404

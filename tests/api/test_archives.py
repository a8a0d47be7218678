"""The archives API: definitions, their errors and limits, and archiving end to end."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from tests.conftest import RunningApp

from stellwerk.auth import Scope
from stellwerk.events import CloudEvent
from stellwerk.refs import BusRef, TenantId, TenantName
from stellwerk.seams import NewEvent
from stellwerk.service import archives as archives_service
from stellwerk.service import provision_tenant
from stellwerk.service.archives import MAX_ARCHIVES_PER_BUS

ORDERS: dict[str, Any] = {"type": ["order.created"]}


def event(event_id: str, event_type: str = "order.created", **extensions: str) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "/shop",
        "type": event_type,
        "data": {"n": event_id},
        **extensions,
    }


async def ingest(app: RunningApp, *events: dict[str, Any]) -> None:
    response = await app.client.post(
        "/v1/buses/default/events",
        headers={
            **app.auth(app.bootstrap.ingest_key),
            "content-type": "application/cloudevents-batch+json",
        },
        json=list(events),
    )
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == len(events)


async def get_until(app: RunningApp, path: str, done: Any, within: float = 15.0) -> httpx.Response:
    """GET `path` until `done(json)` holds, or fail after `within` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        response = await app.client.get(path, headers=app.admin)
        if response.status_code == 200 and done(response.json()):
            return response
        assert asyncio.get_running_loop().time() < deadline, response.text
        await asyncio.sleep(0.05)


async def test_archive_round_trip(running_app: RunningApp) -> None:
    client, admin = running_app.client, running_app.admin

    created = await client.put("/v1/buses/default/archives/everything", headers=admin)

    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["name"], body["bus"], body["pattern"]) == ("everything", "default", None)
    assert (body["retention_days"], body["events"], body["size_bytes"]) == (0, 0, 0)
    assert body["state"] in ("enabled", "catching_up")  # taken in before the answer

    updated = await client.put(
        "/v1/buses/default/archives/everything",
        headers=admin,
        json={"pattern": ORDERS, "retention_days": 30, "description": "orders"},
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["pattern"] == ORDERS
    assert updated.json()["retention_days"] == 30
    assert updated.json()["created_at"] == body["created_at"]

    tenant = await running_app.services.stores.control.get_tenant("default")
    assert tenant is not None
    _, read_key = await running_app.services.stores.control.create_key(tenant.id, Scope.READ)
    reader = running_app.auth(read_key)
    seen = await client.get("/v1/buses/default/archives/everything", headers=reader)
    assert seen.status_code == 200
    assert seen.json()["description"] == "orders"
    listed = await client.get("/v1/buses/default/archives", headers=reader)
    assert [a["name"] for a in listed.json()["archives"]] == ["everything"]
    refused = await client.put("/v1/buses/default/archives/other", headers=reader)
    assert refused.status_code == 403
    assert (
        await client.delete("/v1/buses/default/archives/everything", headers=reader)
    ).status_code == 403

    assert (
        await client.delete("/v1/buses/default/archives/everything", headers=admin)
    ).status_code == 204
    gone = await client.get("/v1/buses/default/archives/everything", headers=admin)
    assert gone.status_code == 404
    assert gone.json()["error"] == "NotFound"
    assert (
        await client.delete("/v1/buses/default/archives/everything", headers=admin)
    ).status_code == 404


async def test_bad_input_gets_a_clear_error(running_app: RunningApp) -> None:
    client, admin = running_app.client, running_app.admin

    async def put(path: str, body: Any) -> httpx.Response:
        return await client.put(path, headers=admin, json=body)

    invalid = await put("/v1/buses/default/archives/a", {"pattern": {"type": "order.created"}})
    assert invalid.status_code == 400
    assert invalid.json()["error"] == "InvalidEventPatternException"
    assert invalid.json()["field"] == "pattern"

    unknown_bus = await put("/v1/buses/nope/archives/a", {})
    assert unknown_bus.status_code == 404
    assert "nope" in unknown_bus.json()["message"]
    assert (await client.get("/v1/buses/nope/archives", headers=admin)).status_code == 404

    bad_name = await put("/v1/buses/default/archives/bad%20name", {})
    assert bad_name.status_code == 400
    assert bad_name.json()["field"] == "name"

    negative = await put("/v1/buses/default/archives/a", {"retention_days": -1})
    assert negative.status_code == 422
    assert negative.json()["field"] == "$.retention_days"
    unknown_field = await put("/v1/buses/default/archives/a", {"retention": 3})
    assert unknown_field.status_code == 422

    not_json = await client.put(
        "/v1/buses/default/archives/a",
        headers={**admin, "content-type": "application/json"},
        content=b"{",
    )
    assert not_json.status_code == 400
    listed = await client.get("/v1/buses/default/archives", headers=admin)
    assert listed.json() == {"archives": []}


async def test_archives_per_bus_are_limited(running_app: RunningApp) -> None:
    client, admin = running_app.client, running_app.admin
    for n in range(MAX_ARCHIVES_PER_BUS):
        response = await client.put(f"/v1/buses/default/archives/a{n}", headers=admin)
        assert response.status_code == 201

    over = await client.put("/v1/buses/default/archives/one-more", headers=admin)

    assert over.status_code == 409
    assert over.json()["error"] == "LimitExceeded"
    assert f"limit {MAX_ARCHIVES_PER_BUS}" in over.json()["message"]
    update = await client.put("/v1/buses/default/archives/a0", headers=admin, json={})
    assert update.status_code == 200


async def test_archives_are_the_tenants_own(running_app: RunningApp) -> None:
    other = await provision_tenant(running_app.services.stores.control, "other")
    theirs = running_app.auth(other.admin_key)
    client = running_app.client
    assert (await client.put("/v1/buses/default/archives/mine", headers=theirs)).status_code == 201

    assert (
        await client.get("/v1/buses/default/archives/mine", headers=running_app.admin)
    ).status_code == 404
    listed = await client.get("/v1/buses/default/archives", headers=running_app.admin)
    assert listed.json() == {"archives": []}
    assert (
        await client.delete("/v1/buses/default/archives/mine", headers=running_app.admin)
    ).status_code == 404


async def test_an_archive_keeps_the_matching_events_from_its_creation_on(
    running_app: RunningApp,
) -> None:
    client, admin = running_app.client, running_app.admin
    await ingest(running_app, event("before"))
    created = await client.put(
        "/v1/buses/default/archives/orders", headers=admin, json={"pattern": ORDERS}
    )
    assert created.status_code == 201, created.text

    await ingest(running_app, event("o1"), event("p1", "payment.done"))
    # A replayed event coming back onto the bus (as a bus target puts it there): not archived.
    services = running_app.services
    replayed = CloudEvent(
        id="o2", source="/shop", type="order.created", extensions={"replayname": "last-week"}
    )
    await services.stores.event_log.append(
        [NewEvent.of(TenantName("default"), "default", replayed)]
    )
    services.stores.log_watch.appended(BusRef(TenantName("default"), "default"))
    # A producer cannot mark its event as replayed: ingest drops `replayname` (Stellwerk's own).
    await ingest(running_app, event("o3", replayname="forged"))

    shown = await get_until(
        running_app,
        "/v1/buses/default/archives/orders",
        lambda body: body["events"] == 2 and body["state"] == "enabled",
    )
    store = services.stores.archive_store
    tenant_id = await _tenant_id(running_app)
    record = await services.stores.control.archives.get(tenant_id, "default", "orders")
    assert record is not None
    now = datetime.now(UTC)
    held = await store.read_window(record.uid, now - timedelta(hours=1), now + timedelta(hours=1))
    assert [e.id for e in held] == ["o1", "o3"]
    assert shown.json()["size_bytes"] == sum(len(e.body) for e in held)

    assert (
        await client.delete("/v1/buses/default/archives/orders", headers=admin)
    ).status_code == 204
    assert (await store.stats([record.uid]))[record.uid].events == 0


async def _tenant_id(app: RunningApp) -> TenantId:
    tenant = await app.services.stores.control.get_tenant(app.bootstrap.tenant)
    assert tenant is not None
    return tenant.id


async def test_an_archive_no_archiver_has_taken_in_is_creating(
    running_app: RunningApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As in scale-out mode with no router process up: the answer does not wait for ever."""
    monkeypatch.setattr(archives_service, "TAKE_SECONDS", 0.2)
    client, admin, services = running_app.client, running_app.admin, running_app.services
    archiver = services.pipeline.archiver
    archiver.stop()
    await get_until(running_app, "/v1/buses/default/archives", lambda _: not archiver.running)
    await ingest(running_app, event("before"))

    created = await client.put(
        "/v1/buses/default/archives/orders", headers=admin, json={"pattern": ORDERS}
    )

    assert created.status_code == 201, created.text
    assert created.json()["state"] == "creating"
    await ingest(running_app, event("o1"))
    task = asyncio.create_task(archiver.run())
    try:
        # The archiver comes back behind the start: the archive keeps what came after it.
        await get_until(
            running_app,
            "/v1/buses/default/archives/orders",
            lambda body: body["state"] == "enabled" and body["events"] == 1,
        )
    finally:
        archiver.stop()
        await asyncio.wait_for(task, 10)

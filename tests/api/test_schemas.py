"""The schema registry, bus validation modes and the failed-events store, through the API."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import RunningApp

from stellwerk.refs import BusRef, TenantName

ORDER_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {"total": {"type": "number", "minimum": 0}, "currency": {"type": "string"}},
    "required": ["total", "currency"],
}


def order(i: int, data: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"o-{i}",
        "source": "urn:shop",
        "type": "order.created",
        "data": data,
    }


async def test_schema_versions(running_app: RunningApp) -> None:
    client, admin = running_app.client, running_app.admin
    first = await client.put(
        "/v1/schemas/order.created", headers=admin, json={"schema": ORDER_SCHEMA}
    )
    assert first.status_code == 201
    assert first.json()["version"] == 1
    same = await client.put(
        "/v1/schemas/order.created", headers=admin, json={"schema": ORDER_SCHEMA}
    )
    assert same.status_code == 200
    assert same.json()["version"] == 1
    v2_schema = {**ORDER_SCHEMA, "required": ["total"]}
    second = await client.put(
        "/v1/schemas/order.created", headers=admin, json={"schema": v2_schema}
    )
    assert second.json()["version"] == 2
    draft4 = {"$schema": "http://json-schema.org/draft-04/schema#", "type": "object"}
    assert (
        await client.put("/v1/schemas/user.created", headers=admin, json={"schema": draft4})
    ).status_code == 201

    latest = (await client.get("/v1/schemas/order.created", headers=admin)).json()
    assert latest["schema"] == v2_schema
    old = (await client.get("/v1/schemas/order.created?version=1", headers=admin)).json()
    assert old["schema"] == ORDER_SCHEMA
    versions = (await client.get("/v1/schemas/order.created/versions", headers=admin)).json()
    assert [v["version"] for v in versions["versions"]] == [1, 2]
    listed = (await client.get("/v1/schemas", headers=admin)).json()["schemas"]
    assert [(s["type"], s["version"]) for s in listed] == [
        ("order.created", 2),
        ("user.created", 1),
    ]

    assert (
        await client.delete("/v1/schemas/order.created?version=2", headers=admin)
    ).status_code == 204
    assert (await client.get("/v1/schemas/order.created", headers=admin)).json()["version"] == 1
    assert (await client.delete("/v1/schemas/order.created", headers=admin)).status_code == 204
    assert (await client.get("/v1/schemas/order.created", headers=admin)).status_code == 404


async def test_bad_schemas_are_refused_with_the_reason(running_app: RunningApp) -> None:
    client, admin = running_app.client, running_app.admin
    for schema, fragment in [
        ({"type": 5}, "not a valid JSON Schema"),
        ({"$ref": "http://169.254.169.254/latest"}, "remote references are not allowed"),
        ({"$schema": "http://json-schema.org/draft-03/schema#"}, "Unknown meta-schema"),
        ([1, 2], "must be an object"),
    ]:
        response = await client.put("/v1/schemas/t", headers=admin, json={"schema": schema})
        assert response.status_code == 422, schema
        assert response.json()["error"] == "InvalidSchema"
        assert fragment in response.json()["message"]
        assert response.json()["field"] == "$.schema"
    bad_type = await client.put("/v1/schemas/a%20b", headers=admin, json={"schema": {}})
    assert bad_type.status_code == 400
    bad_version = await client.get("/v1/schemas/t?version=x", headers=admin)
    assert bad_version.status_code == 400


async def test_enforce_keeps_failing_events_and_resubmits_them_after_a_fix(
    running_app: RunningApp,
) -> None:
    app = running_app
    client, admin = app.client, app.admin
    await client.put("/v1/schemas/order.created", headers=admin, json={"schema": ORDER_SCHEMA})
    bus = await client.put("/v1/buses/orders", headers=admin, json={"schema_validation": "enforce"})
    assert bus.json()["schema_validation"] == "enforce"
    ingest = app.auth(app.bootstrap.ingest_key)
    batch = [
        order(1, {"total": 5, "currency": "EUR"}),
        order(2, {"total": 7}),
        order(3, {"total": -1, "currency": "EUR"}),
        {**order(4, None), "type": "no.schema"},
    ]
    response = await client.post("/v1/buses/orders/events", headers=ingest, json=batch)
    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == 2
    assert [(f["index"], f["error"]) for f in body["failed"]] == [
        (1, "SchemaValidationFailed"),
        (2, "SchemaValidationFailed"),
    ]
    assert "currency" in body["failed"][0]["message"]
    assert body["failed"][1]["field"] == "data.total"
    # Each violation in `errors`, the first as the entry's own error.
    assert [(e["error"], e["field"]) for e in body["failed"][1]["errors"]] == [
        ("SchemaValidationFailed", "data.total")
    ]
    stored = await app.services.stores.event_log.read(BusRef(TenantName("default"), "orders"))
    assert [e.id for e in stored] == ["o-1", "o-4"]

    page = (await client.get("/v1/buses/orders/failed-events", headers=admin)).json()
    kept = page["failed_events"]
    assert [f["event_id"] for f in kept] == ["o-2", "o-3"]
    assert kept[0]["event"]["data"] == {"total": 7}
    assert kept[0]["errors"][0]["path"] == "/"
    only = await client.get("/v1/buses/orders/failed-events?id=o-3", headers=admin)
    assert [f["event_id"] for f in only.json()["failed_events"]] == ["o-3"]
    paged = (await client.get("/v1/buses/orders/failed-events?limit=1", headers=admin)).json()
    assert paged["next_after"] == kept[0]["id"]
    rest = await client.get(
        f"/v1/buses/orders/failed-events?after={paged['next_after']}", headers=admin
    )
    assert [f["event_id"] for f in rest.json()["failed_events"]] == ["o-3"]

    # The schema is relaxed: o-2 now passes, o-3 (negative total) still fails.
    relaxed = {**ORDER_SCHEMA, "required": ["total"]}
    await client.put("/v1/schemas/order.created", headers=admin, json={"schema": relaxed})
    result = await client.post(
        "/v1/buses/orders/failed-events/resubmit", headers=admin, json={"all": True}
    )
    assert result.status_code == 200
    assert result.json()["resubmitted"] == 1
    assert result.json()["still_failing"] == 1
    stored = await app.services.stores.event_log.read(BusRef(TenantName("default"), "orders"))
    assert [e.id for e in stored] == ["o-1", "o-4", "o-2"]
    assert json.loads(stored[2].body)["bus"] == "orders"
    remaining = (await client.get("/v1/buses/orders/failed-events", headers=admin)).json()
    assert [f["event_id"] for f in remaining["failed_events"]] == ["o-3"]
    discarded = await client.delete(
        f"/v1/buses/orders/failed-events/{remaining['failed_events'][0]['id']}", headers=admin
    )
    assert discarded.status_code == 204
    assert (await client.get("/v1/buses/orders/failed-events", headers=admin)).json()[
        "failed_events"
    ] == []
    everything = await client.get(
        "/v1/buses/orders/failed-events?include_resubmitted=true", headers=admin
    )
    assert [f["event_id"] for f in everything.json()["failed_events"]] == ["o-2"]


async def test_warn_mode_stores_and_reports(running_app: RunningApp) -> None:
    app = running_app
    await app.client.put(
        "/v1/schemas/order.created", headers=app.admin, json={"schema": ORDER_SCHEMA}
    )
    await app.client.put("/v1/buses/default", headers=app.admin, json={"schema_validation": "warn"})
    response = await app.client.post(
        "/v1/buses/default/events",
        headers=app.auth(app.bootstrap.ingest_key),
        json=[order(1, {"total": 1, "currency": "EUR"}), order(2, "not an object")],
    )
    body = response.json()
    assert body["accepted"] == 2
    assert body["failed"] == []
    assert [(w["index"], w["id"]) for w in body["warnings"]] == [(1, "o-2")]
    assert (
        len(await app.services.stores.event_log.read(BusRef(TenantName("default"), "default"))) == 2
    )
    text = (await app.client.get("/metrics")).text
    assert (
        'stellwerk_ingest_events_failed_validation_total{bus="default",mode="warn",'
        'tenant="default"} 1.0'
    ) in text


async def test_a_single_invalid_event_is_a_client_error_but_is_kept(
    running_app: RunningApp,
) -> None:
    app = running_app
    await app.client.put(
        "/v1/schemas/order.created", headers=app.admin, json={"schema": ORDER_SCHEMA}
    )
    await app.client.put(
        "/v1/buses/default", headers=app.admin, json={"schema_validation": "enforce"}
    )
    response = await app.client.post(
        "/v1/buses/default/events",
        headers={
            **app.auth(app.bootstrap.ingest_key),
            "content-type": "application/cloudevents+json",
        },
        content=json.dumps(order(1, {"total": "12"})),
    )
    assert response.status_code == 400
    assert response.json()["error"] == "SchemaValidationFailed"
    failed_id = response.json()["failed"][0]["failed_event_id"]
    kept = (await app.client.get("/v1/buses/default/failed-events", headers=app.admin)).json()
    assert [f["id"] for f in kept["failed_events"]] == [failed_id]

"""`POST /v1/buses/{bus}/events` through the whole app, with events made by the real SDK."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.v1.event import CloudEvent as SdkEvent
from tests.conftest import RunningApp
from tests.tracking.support import make_source

from stellwerk.app import build_app
from stellwerk.config import load_settings
from stellwerk.refs import BusRef, TenantName
from stellwerk.service import provision_tenant

URL = "/v1/buses/default/events"


def event(i: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"evt-{i}",
        "source": "https://shop.example/orders",
        "type": "order.created",
        "data": {"total": 100 + i},
        **extra,
    }


def ingest_headers(app: RunningApp, content_type: str = "application/json") -> dict[str, str]:
    return {**app.auth(app.bootstrap.ingest_key), "content-type": content_type}


async def stored(app: RunningApp, bus: str = "default") -> list[dict[str, Any]]:
    events = await app.services.stores.event_log.read(BusRef(TenantName("default"), bus))
    return [json.loads(e.body) for e in events]


async def test_structured_and_binary_events_from_the_sdk(running_app: RunningApp) -> None:
    app = running_app
    attrs = {
        "id": "sdk-1",
        "source": "urn:shop",
        "type": "order.created",
        "specversion": "1.0",
        "time": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        "comexamplenote": 'ümlaut, 100% "quoted"',
    }
    structured = ce_http.to_structured_event(SdkEvent(dict(attrs), {"total": 7}))
    response = await app.client.post(
        URL,
        content=structured.body,
        headers={**app.auth(app.bootstrap.ingest_key), **structured.headers},
    )
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 1, "failed": [], "duplicates": 0}

    binary = ce_http.to_binary_event(SdkEvent({**attrs, "id": "sdk-2"}, {"total": 8}))
    response = await app.client.post(
        URL, content=binary.body, headers={**app.auth(app.bootstrap.ingest_key), **binary.headers}
    )
    assert response.status_code == 202, response.text

    first, second = await stored(app)
    assert first["id"] == "sdk-1"
    assert first["data"] == {"total": 7}
    assert second["id"] == "sdk-2"
    assert second["comexamplenote"] == 'ümlaut, 100% "quoted"'
    for each in (first, second):
        assert each["tenant"] == "default"
        assert each["bus"] == "default"
        assert datetime.fromisoformat(each["recordedtime"]).tzinfo is not None


async def test_a_batch_partly_succeeds(running_app: RunningApp) -> None:
    app = running_app
    batch = [event(1), {"id": "x", "type": "t"}, event(3, time="yesterday"), event(4)]
    response = await app.client.post(
        URL,
        content=json.dumps(batch),
        headers=ingest_headers(app, "application/cloudevents-batch+json"),
    )
    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == 2
    assert [(f["index"], f["id"], f.get("field")) for f in body["failed"]] == [
        (1, "x", "source"),
        (2, "evt-3", "time"),
    ]
    assert all(f["message"] for f in body["failed"])
    assert [e["id"] for e in await stored(app)] == ["evt-1", "evt-4"]


async def test_every_missing_or_invalid_attribute_is_reported_at_once(
    running_app: RunningApp,
) -> None:
    app = running_app
    incomplete = {"id": "x", "time": "yesterday"}
    batch = await app.client.post(URL, json=[event(1), incomplete], headers=ingest_headers(app))
    assert batch.status_code == 202
    (failed,) = batch.json()["failed"]
    # The first problem where it always was, for clients that read only that ...
    assert (failed["error"], failed["field"]) == ("MissingAttribute", "source")
    # ... and every problem in `errors`.
    assert [(e["error"], e["field"]) for e in failed["errors"]] == [
        ("MissingAttribute", "source"),
        ("MissingAttribute", "specversion"),
        ("MissingAttribute", "type"),
        ("InvalidAttribute", "time"),
    ]
    assert all(e["message"] in failed["message"] for e in failed["errors"])

    # A request with no valid event is refused as a whole, with the same list.
    single = await app.client.post(
        URL, json=incomplete, headers=ingest_headers(app, "application/cloudevents+json")
    )
    assert single.status_code == 400
    body = single.json()
    assert (body["error"], body["field"]) == ("MissingAttribute", "source")
    assert body["errors"] == failed["errors"]
    assert body["failed"][0]["errors"] == failed["errors"]
    # One problem: one entry, and the message as it always read.
    one = await app.client.post(URL, json={**event(2), "type": None}, headers=ingest_headers(app))
    assert one.json()["message"] == "attribute 'type' is missing"
    assert one.json()["errors"] == [
        {"error": "MissingAttribute", "message": "attribute 'type' is missing", "field": "type"}
    ]


async def test_plain_json_object_or_array_and_duplicates(running_app: RunningApp) -> None:
    app = running_app
    one = await app.client.post(URL, json=event(1), headers=ingest_headers(app))
    assert one.json() == {"accepted": 1, "failed": [], "duplicates": 0}
    many = await app.client.post(URL, json=[event(1), event(2)], headers=ingest_headers(app))
    assert many.status_code == 202
    assert many.json() == {"accepted": 2, "failed": [], "duplicates": 1}
    assert [e["id"] for e in await stored(app)] == ["evt-1", "evt-2"]
    # The same id from another source is another event.
    other = await app.client.post(
        URL, json=event(1, source="urn:other"), headers=ingest_headers(app)
    )
    assert other.json()["duplicates"] == 0
    assert len(await stored(app)) == 3


async def test_bad_requests_get_a_reason_and_the_server_stays_healthy(
    running_app: RunningApp,
) -> None:
    app = running_app
    headers = ingest_headers(app)
    cases: list[tuple[dict[str, str], bytes, int, str]] = [
        (headers, b"{not json", 400, "InvalidJson"),
        (headers, b"42", 400, "NotAnObjectOrArray"),
        (ingest_headers(app, "application/cloudevents+json"), b"[]", 400, "NotAnObject"),
        (headers, json.dumps({**event(), "specversion": "0.3"}).encode(), 400, "InvalidAttribute"),
        (headers, json.dumps({"id": "1", "source": "s"}).encode(), 400, "MissingAttribute"),
        (ingest_headers(app, "text/plain"), b"hello", 415, "UnsupportedMediaType"),
        (
            headers,
            json.dumps(event(data="x" * (256 * 1024))).encode(),
            400,
            "EventTooLarge",
        ),
        (headers, json.dumps([event(i) for i in range(1001)]).encode(), 413, "BatchTooLarge"),
    ]
    for request_headers, body, status, error in cases:
        response = await app.client.post(URL, content=body, headers=request_headers)
        assert response.status_code == status, (error, response.text)
        assert response.json()["error"] == error, response.text
        assert response.json()["message"]
    missing_field = await app.client.post(URL, json={"id": "1", "source": "s"}, headers=headers)
    assert missing_field.json()["field"] == "specversion"

    too_big = await app.client.post(
        URL, content=b"[" + b" " * app.settings.max_body_bytes + b"]", headers=headers
    )
    assert too_big.status_code == 413
    unknown_bus = await app.client.post("/v1/buses/nope/events", json=event(), headers=headers)
    assert unknown_bus.status_code == 404
    other = await provision_tenant(app.services.stores.control, "other")
    await app.client.put("/v1/buses/private", headers=app.auth(other.admin_key))
    hidden = await app.client.post("/v1/buses/private/events", json=event(), headers=headers)
    assert hidden.status_code == 404
    no_key = await app.client.post(URL, json=event())
    assert no_key.status_code == 401
    tenant = await app.services.stores.control.get_tenant("default")
    assert tenant is not None
    from stellwerk.auth import Scope

    _, read_key = await app.services.stores.control.create_key(tenant.id, Scope.READ)
    wrong_scope = await app.client.post(URL, json=event(), headers=app.auth(read_key))
    assert wrong_scope.status_code == 403

    assert await stored(app) == []
    assert (await app.client.get("/readyz")).status_code == 200
    fine = await app.client.post(URL, json=event(), headers=headers)
    assert fine.status_code == 202


async def test_ingest_metrics(running_app: RunningApp) -> None:
    app = running_app
    await app.client.post(URL, json=[event(1), event(1), {"id": "2"}], headers=ingest_headers(app))
    text = (await app.client.get("/metrics")).text
    assert 'stellwerk_ingest_events_accepted_total{bus="default",tenant="default"} 1.0' in text
    assert 'stellwerk_ingest_events_duplicate_total{bus="default",tenant="default"} 1.0' in text
    assert (
        'stellwerk_ingest_events_rejected_total{bus="default",reason="MissingAttribute",'
        'tenant="default"} 1.0'
    ) in text
    assert "stellwerk_log_append_batch_events_count" in text


async def test_event_rate_limit(tmp_path: Path) -> None:
    # 0.1 events/s: a burst of one event, then one every 10 s, so no refill between two requests.
    settings = load_settings({"data_dir": str(tmp_path), "tenant_event_rate": "0.1"})
    app = build_app(settings)
    async with app.router.lifespan_context(app):
        await asyncio.wait_for(app.state.lifecycle.wait_started(), 30)
        keys = msgspec.json.decode((tmp_path / "bootstrap.json").read_bytes())
        headers = {"Authorization": f"Bearer {keys['ingest_key']}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://s") as client:
            first = await client.post(URL, json=[event(1)], headers=headers)
            second = await client.post(URL, json=[event(9)], headers=headers)
    assert first.status_code == 202
    assert second.status_code == 429
    assert second.headers["retry-after"] == "10"
    assert second.json()["error"] == "TooManyRequests"


@pytest.mark.parametrize("count", [1, 50])
async def test_many_concurrent_requests_are_all_durable(
    running_app: RunningApp, count: int
) -> None:
    app = running_app

    async def send(n: int) -> int:
        batch = [event(n * 1000 + i) for i in range(count)]
        response = await app.client.post(URL, json=batch, headers=ingest_headers(app))
        assert response.status_code == 202
        accepted: int = response.json()["accepted"]
        return accepted

    totals = await asyncio.gather(*(send(n) for n in range(40)))
    assert sum(totals) == 40 * count
    assert (
        len(
            await app.services.stores.event_log.read(
                BusRef(TenantName("default"), "default"), limit=10_000
            )
        )
        == 40 * count
    )


async def test_every_ingest_route_counts_its_requests_per_tenant_and_bus(
    running_app: RunningApp,
) -> None:
    # Counted where every route passes (`Ingest._take`): a peer site's health policy reads
    # them. CloudEvents and Segment here; Snowplow and PutEvents take the same path.
    app = running_app
    key = await make_source(app.client, app.admin, "counted")
    assert (await app.client.post(URL, json=[event(1)], headers=ingest_headers(app))).status_code
    refused = await app.client.post(URL, json=[{"id": "2"}], headers=ingest_headers(app))
    assert refused.status_code == 400  # the client's fault: a request, not an error
    basic = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
    tracked = await app.client.post(
        "/v1/track", headers=basic, json={"userId": "u", "event": "e", "messageId": "m-1"}
    )
    assert tracked.status_code == 200, tracked.text
    text = (await app.client.get("/metrics")).text
    assert 'stellwerk_ingest_requests_total{bus="default",tenant="default"} 3.0' in text
    assert 'stellwerk_ingest_request_errors_total{bus="default",tenant="default"} 0.0' in text

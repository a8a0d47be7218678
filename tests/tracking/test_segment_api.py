"""The Segment-compatible API, in-process: every call becomes a CloudEvent `segment.<type>`
on the source's bus, SDK retries are duplicates, and bad input gets a 4xx in Segment's shape."""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import RunningApp, app_running
from tests.tracking.support import bus_events, make_source

from stellwerk.config import load_settings
from stellwerk.ingest import DecodedEvent
from stellwerk.tracking import CAPABILITY, Arrival, Binding, TrackingOpened, segment_reader


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[RunningApp]:
    settings = load_settings({"data_dir": str(tmp_path / "data"), "max_batch_events": 50})
    async with app_running(settings) as running:
        yield running


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


async def test_each_call_becomes_a_cloudevent_of_its_type(app: RunningApp) -> None:
    key = await make_source(app.client, app.admin)
    calls: list[tuple[str, dict[str, Any]]] = [
        ("track", {"userId": "u1", "event": "Order Completed", "properties": {"total": 7}}),
        ("identify", {"userId": "u1", "traits": {"plan": "pro"}}),
        ("page", {"anonymousId": "a1", "name": "Home"}),
        ("screen", {"userId": 42, "name": "Cart"}),
        ("group", {"userId": "u1", "groupId": "g1"}),
        ("alias", {"userId": "u1", "previousId": "a1"}),
    ]
    for n, (kind, message) in enumerate(calls):
        body = {**message, "messageId": f"m-{n}", "timestamp": "2026-12-04T10:00:00.000+00:00"}
        answer = await app.client.post(f"/v1/{kind}", headers=basic(key), json=body)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"success": True}

    events = await bus_events(app)
    assert [e["type"] for e in events] == [f"segment.{kind}" for kind, _ in calls]
    assert [e["id"] for e in events] == [f"m-{n}" for n in range(len(calls))]
    assert {e["source"] for e in events} == {"/sources/shop"}
    assert [e["subject"] for e in events] == ["u1", "u1", "a1", "42", "u1", "u1"]
    assert {e["time"] for e in events} == {"2026-12-04T10:00:00.000+00:00"}
    first = events[0]
    assert first["datacontenttype"] == "application/json"
    # What the collector adds (consent, enrichment) is in context.stellwerk: test_refine.py.
    assert set(first["data"].pop("context")) == {"stellwerk"}
    assert first["data"] == {
        "userId": "u1",
        "event": "Order Completed",
        "properties": {"total": 7},
        "messageId": "m-0",
        "timestamp": "2026-12-04T10:00:00.000+00:00",
        "type": "track",
    }


async def test_a_batch_is_one_request_with_shared_context_and_the_key_in_the_body(
    app: RunningApp,
) -> None:
    key = await make_source(app.client, app.admin)
    first = {"type": "track", "event": "Viewed", "anonymousId": "a1", "messageId": "b-1"}
    body: dict[str, Any] = {
        "writeKey": key,
        "sentAt": "2026-12-04T10:00:01Z",
        "context": {"library": {"name": "analytics.js"}},
        "batch": [
            first,
            {
                "type": "identify",
                "userId": "u1",
                "messageId": "b-2",
                "context": {"ip": "192.0.2.1"},
                "writeKey": key,
            },
        ],
    }
    compressed = gzip.compress(json.dumps(body).encode())
    answer = await app.client.post(
        "/v1/batch",
        content=compressed,
        headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"},
    )
    assert answer.status_code == 200, answer.text
    events = await bus_events(app)
    assert [e["id"] for e in events] == ["b-1", "b-2"]
    for event in events:  # what the collector adds: test_refine.py
        del event["data"]["context"]["stellwerk"]
    assert events[0]["data"]["context"] == {"library": {"name": "analytics.js"}}
    assert events[0]["data"]["sentAt"] == "2026-12-04T10:00:01Z"
    # Its own wins (its address anonymised before it is stored).
    assert events[1]["data"]["context"] == {"ip": "192.0.2.0"}
    # The write key names the source; it is not part of any event.
    assert all(key not in str(e) for e in events)
    # /v1/import takes the same batches.
    again = {**body, "batch": [{**first, "messageId": "i-1"}]}
    assert (await app.client.post("/v1/import", json=again)).status_code == 200
    assert [e["id"] for e in await bus_events(app)] == ["b-1", "b-2", "i-1"]


async def test_a_retried_message_is_stored_once(app: RunningApp) -> None:
    key = await make_source(app.client, app.admin)
    message = {"type": "track", "event": "Paid", "userId": "u1", "messageId": "r-1"}
    for _ in range(3):
        answer = await app.client.post("/v1/batch", headers=basic(key), json={"batch": [message]})
        assert answer.status_code == 200
    assert [e["id"] for e in await bus_events(app)] == ["r-1"]


async def test_the_source_chooses_the_bus(app: RunningApp) -> None:
    assert (await app.client.put("/v1/buses/web", headers=app.admin)).status_code == 201
    key = await make_source(app.client, app.admin, "web", bus="web")
    answer = await app.client.post(
        "/v1/track", headers=basic(key), json={"userId": "u", "event": "E"}
    )
    assert answer.status_code == 200
    assert [e["type"] for e in await bus_events(app, "web")] == ["segment.track"]
    assert await bus_events(app) == []
    # The bus deleted under the source: 404 until the source names another.
    assert (await app.client.delete("/v1/buses/web", headers=app.admin)).status_code == 204
    answer = await app.client.post(
        "/v1/track", headers=basic(key), json={"userId": "u", "event": "E"}
    )
    assert answer.status_code == 404
    assert answer.json()["code"] == "NotFound"


async def test_a_wrong_or_missing_write_key_gets_401_in_segments_shape(app: RunningApp) -> None:
    key = await make_source(app.client, app.admin)
    message = {"userId": "u", "event": "E"}
    made_up = key[:-4] + ("aaaa" if not key.endswith("aaaa") else "bbbb")
    for headers, body in [
        ({}, message),
        (basic(made_up), message),
        (basic("not-a-key"), message),
        ({"Authorization": "Basic %%%"}, message),
        ({"Authorization": f"Bearer {key}"}, message),
        ({}, {**message, "writeKey": made_up}),
        ({}, {**message, "writeKey": 7}),
    ]:
        answer = await app.client.post("/v1/track", headers=headers, json=body)
        assert answer.status_code == 401, (headers, answer.text)
        error = answer.json()
        assert error["success"] is False
        assert error["code"] == error["error"] == "Unauthorized"
        assert error["message"]
        assert "www-authenticate" not in answer.headers  # no login dialog in a browser
    await app.client.delete("/v1/sources/shop", headers=app.admin)
    answer = await app.client.post("/v1/track", headers=basic(key), json=message)
    assert answer.status_code == 401
    assert await bus_events(app) == []


async def refused(
    app: RunningApp, path: str, content: bytes, headers: dict[str, str]
) -> dict[str, Any]:
    answer = await app.client.post(path, content=content, headers=headers)
    assert 400 <= answer.status_code < 500, answer.text
    body: dict[str, Any] = answer.json()
    assert body["success"] is False
    assert body["code"] == body["error"]
    return {"status": answer.status_code, **body}


async def test_bad_bodies_get_clear_400s(app: RunningApp) -> None:
    key = await make_source(app.client, app.admin)
    auth = basic(key)
    gz = {**auth, "Content-Encoding": "gzip"}
    cases: list[tuple[str, bytes, dict[str, str], int, str]] = [
        ("/v1/track", b"{not json", auth, 400, "InvalidJson"),
        ("/v1/track", b"", auth, 400, "InvalidJson"),
        ("/v1/track", b"[1, 2]", auth, 400, "NotAnObject"),
        ("/v1/track", b"not gzip at all", gz, 400, "InvalidGzip"),
        ("/v1/track", gzip.compress(b'{"a": 1}')[:-6], gz, 400, "InvalidGzip"),
        ("/v1/track", b"{}", {**auth, "Content-Encoding": "br"}, 415, "UnsupportedMediaType"),
        ("/v1/batch", b'{"batch": {}}', auth, 400, "InvalidBatch"),
        ("/v1/batch", b'{"messages": []}', auth, 400, "InvalidBatch"),
        ("/v1/track", b'{"event": "E"}', auth, 400, "MissingField"),
        ("/v1/track", b'{"userId": "u"}', auth, 400, "MissingField"),
        ("/v1/track", b'{"userId": "", "event": "E"}', auth, 400, "InvalidField"),
        (
            "/v1/track",
            b'{"userId": "u", "event": "E", "properties": []}',
            auth,
            400,
            "InvalidField",
        ),
        ("/v1/group", b'{"userId": "u"}', auth, 400, "MissingField"),
        ("/v1/alias", b'{"userId": "u"}', auth, 400, "MissingField"),
        ("/v1/batch", b'{"batch": [{"type": "boom", "userId": "u"}]}', auth, 400, "UnknownType"),
        ("/v1/batch", b'{"batch": [7]}', auth, 400, "NotAnObject"),
        # Found by the fuzz test: a type that is not a string (a list cannot be hashed).
        ("/v1/batch", b'{"batch": [{"type": ["track"], "userId": "u"}]}', auth, 400, "UnknownType"),
        ("/v1/batch", b'{"batch": [{"type": {}, "userId": "u"}]}', auth, 400, "UnknownType"),
    ]
    for path, content, headers, status, code in cases:
        error = await refused(app, path, content, headers)
        assert (error["status"], error["code"]) == (status, code), (path, content, error)
    assert await bus_events(app) == []


async def test_size_limits_are_400s_and_413s_not_500s(app: RunningApp) -> None:
    key = await make_source(app.client, app.admin)
    auth = basic(key)
    big = {"userId": "u", "event": "E", "properties": {"blob": "x" * 300_000}}
    error = await refused(app, "/v1/track", json.dumps(big).encode(), auth)
    assert (error["status"], error["code"]) == (400, "EventTooLarge")
    # A gzip bomb: small on the wire, past the body limit once inflated.
    bomb = gzip.compress(b'{"userId": "u", "event": "E", "pad": "' + b"0" * 5_000_000 + b'"}')
    assert len(bomb) < 50_000
    error = await refused(app, "/v1/track", bomb, {**auth, "Content-Encoding": "gzip"})
    assert (error["status"], error["code"]) == (413, "PayloadTooLarge")
    # Over the process's body limit, declared: refused before any route, in Stellwerk's shape
    # (`error`, no `code`). No SDK sends that much: their batches stay far below.
    answer = await app.client.post("/v1/batch", headers=auth, content=b" " * (4 * 1024 * 1024 + 1))
    assert answer.status_code == 413
    assert answer.json()["error"] == "PayloadTooLarge"
    many = {"batch": [{"type": "page", "userId": "u"}] * 51}
    error = await refused(app, "/v1/batch", json.dumps(many).encode(), auth)
    assert (error["status"], error["code"]) == (413, "BatchTooLarge")
    assert await bus_events(app) == []


async def test_a_batch_keeps_its_valid_messages_and_lists_the_others(app: RunningApp) -> None:
    key = await make_source(app.client, app.admin)
    batch = [
        {"type": "track", "event": "E", "userId": "u", "messageId": "ok-1"},
        {"type": "track", "userId": "u", "messageId": "no-event"},
        {"type": "fly", "userId": "u"},
        {"type": "page", "anonymousId": "a", "messageId": "ok-2"},
    ]
    answer = await app.client.post("/v1/batch", headers=basic(key), json={"batch": batch})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["success"] is True
    assert [(f["index"], f["error"]) for f in body["failed"]] == [
        (1, "MissingField"),
        (2, "UnknownType"),
    ]
    assert body["failed"][0]["id"] == "no-event"
    assert [e["id"] for e in await bus_events(app)] == ["ok-1", "ok-2"]
    metrics = (await app.client.get("/metrics")).text
    for outcome, count in [("accepted", 2), ("MissingField", 1), ("UnknownType", 1)]:
        labels = f'outcome="{outcome}",source="shop",tenant="default"'
        assert f"stellwerk_tracking_messages_total{{{labels}}} {count}.0" in metrics


async def test_only_segment_sources_take_the_segment_api(app: RunningApp) -> None:
    key = await make_source(app.client, app.admin, "pixel", kind="snowplow")
    answer = await app.client.post("/v1/track", headers=basic(key), json={"userId": "u"})
    assert answer.status_code == 403
    assert answer.json()["code"] == "WrongSourceKind"


async def test_cors_follows_each_sources_allowed_origins(app: RunningApp) -> None:
    key = await make_source(app.client, app.admin, allowed_origins=["https://shop.example"])
    message = {"userId": "u", "event": "E"}
    preflight = {
        "Origin": "https://shop.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    answer = await app.client.options("/v1/track", headers=preflight)
    assert answer.status_code == 204
    assert answer.headers["access-control-allow-origin"] == "https://shop.example"
    assert "POST" in answer.headers["access-control-allow-methods"]
    assert answer.headers["access-control-allow-credentials"] == "true"

    answer = await app.client.options(
        "/v1/track", headers={**preflight, "Origin": "https://evil.example"}
    )
    assert answer.status_code == 403
    assert "access-control-allow-origin" not in answer.headers

    sent = await app.client.post(
        "/v1/track", headers={**basic(key), "Origin": "https://shop.example"}, json=message
    )
    assert sent.status_code == 200
    assert sent.headers["access-control-allow-origin"] == "https://shop.example"
    assert sent.headers["vary"] == "Origin"

    # The actual request is checked against its own source, whatever the preflight said.
    other = await make_source(app.client, app.admin, "other")
    answer = await app.client.post(
        "/v1/track", headers={**basic(other), "Origin": "https://shop.example"}, json=message
    )
    assert answer.status_code == 403
    assert answer.json()["code"] == "OriginNotAllowed"
    assert "access-control-allow-origin" not in answer.headers
    # Server-side senders send no Origin and are not subject to CORS.
    assert (
        await app.client.post("/v1/track", headers=basic(other), json=message)
    ).status_code == 200
    assert len(await bus_events(app)) == 2


async def test_refine_is_where_enrichment_and_consent_change_or_drop_messages(
    app: RunningApp,
) -> None:
    key = await make_source(app.client, app.admin, without_consent="anonymous")
    seen: list[tuple[str | None, str]] = []

    def refine(
        message: dict[str, Any], arrival: Arrival, binding: Binding
    ) -> dict[str, Any] | None:
        seen.append((arrival.user_agent, binding.without_consent))
        assert arrival.headers["sec-gpc"] == "1"
        assert "authorization" not in arrival.headers
        if message.get("userId") == "no-consent":
            return None
        return {**message, "context": {**message.get("context", {}), "enriched": True}}

    opened = app.services.capabilities[CAPABILITY.name]
    assert isinstance(opened, TrackingOpened)
    opened.collector.refine = refine
    batch = [
        {"type": "track", "event": "E", "userId": "u", "messageId": "kept", "context": {"a": 1}},
        {"type": "track", "event": "E", "userId": "no-consent", "messageId": "dropped"},
    ]
    headers = {**basic(key), "User-Agent": "shop-backend/1.0", "Sec-GPC": "1"}
    answer = await app.client.post("/v1/batch", headers=headers, json={"batch": batch})
    assert answer.json() == {"success": True}
    # Dropped alone is still taken: an SDK must not send it again.
    answer = await app.client.post("/v1/batch", headers=headers, json={"batch": batch[1:]})
    assert answer.json() == {"success": True}
    events = await bus_events(app)
    assert [e["id"] for e in events] == ["kept"]
    assert events[0]["data"]["context"] == {"a": 1, "enriched": True}
    assert seen == [("shop-backend/1.0", "anonymous")] * 3


async def _enforce_a_total(app: RunningApp) -> None:
    """The default bus in `enforce` mode, with a schema that wants `segment.track`'s
    `properties.total`."""
    enforce = await app.client.put(
        "/v1/buses/default", headers=app.admin, json={"schema_validation": "enforce"}
    )
    assert enforce.status_code == 200
    schema = {
        "type": "object",
        "properties": {"properties": {"type": "object", "required": ["total"]}},
    }
    made = await app.client.put(
        "/v1/schemas/segment.track", headers=app.admin, json={"schema": schema}
    )
    assert made.status_code == 201, made.text


async def test_the_buss_schemas_hold_for_tracked_events_and_refused_ones_are_kept(
    app: RunningApp,
) -> None:
    key = await make_source(app.client, app.admin)
    await _enforce_a_total(app)
    batch = [
        {
            "type": "track",
            "event": "Paid",
            "userId": "u",
            "messageId": "ok",
            "properties": {"total": 1},
        },
        {"type": "track", "event": "Paid", "userId": "u", "messageId": "bad", "properties": {}},
        {"type": "page", "userId": "u", "messageId": "page"},  # no schema for segment.page
    ]
    answer = await app.client.post("/v1/batch", headers=basic(key), json={"batch": batch})
    assert answer.status_code == 200, answer.text
    (failure,) = answer.json()["failed"]
    assert (failure["index"], failure["id"], failure["error"]) == (
        1,
        "bad",
        "SchemaValidationFailed",
    )
    assert failure["field"] == "properties"  # the message's field: the event's data
    assert [e["id"] for e in await bus_events(app)] == ["ok", "page"]

    alone = await app.client.post("/v1/batch", headers=basic(key), json={"batch": batch[1:2]})
    assert alone.status_code == 400
    assert alone.json()["code"] == "SchemaValidationFailed"
    kept = await app.client.get("/v1/buses/default/failed-events", headers=app.admin)
    assert [f["event"]["id"] for f in kept.json()["failed_events"]] == ["bad", "bad"]


async def test_the_tenants_event_rate_holds_for_tracked_events(tmp_path: Path) -> None:
    settings = load_settings({"data_dir": str(tmp_path / "data"), "tenant_event_rate": 3})
    async with app_running(settings) as app:
        key = await make_source(app.client, app.admin)
        batch = [{"type": "page", "userId": "u", "messageId": f"p-{n}"} for n in range(3)]
        answer = await app.client.post("/v1/batch", headers=basic(key), json={"batch": batch})
        assert answer.status_code == 200
        answer = await app.client.post("/v1/batch", headers=basic(key), json={"batch": batch})
        assert answer.status_code == 429
        assert answer.json()["code"] == "TooManyRequests"
        assert int(answer.headers["retry-after"]) >= 1
        assert len(await bus_events(app)) == 3


async def test_a_rotated_write_key_replaces_the_old_one_at_once(app: RunningApp) -> None:
    old = await make_source(app.client, app.admin)
    message = {"userId": "u", "event": "E"}
    assert (await app.client.post("/v1/track", headers=basic(old), json=message)).status_code == 200
    rotated = await app.client.post("/v1/sources/shop/write-key", headers=app.admin)
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["write_key"]
    assert new != old
    assert rotated.json()["write_key_id"] == new.split("_")[1]
    shown = await app.client.get("/v1/sources/shop", headers=app.admin)
    assert "write_key" not in shown.json()
    assert (await app.client.post("/v1/track", headers=basic(old), json=message)).status_code == 401
    assert (await app.client.post("/v1/track", headers=basic(new), json=message)).status_code == 200
    assert len(await bus_events(app)) == 2
    ingest = app.auth(app.bootstrap.ingest_key)
    assert (await app.client.post("/v1/sources/shop/write-key", headers=ingest)).status_code == 403
    assert (
        await app.client.post("/v1/sources/gone/write-key", headers=app.admin)
    ).status_code == 404


class _CountedTake:
    """The C reader (`segment_reader.native`) with the events its `take` made counted."""

    def __init__(self) -> None:
        native = segment_reader.native
        assert native is not None, "the C reader is built (CI requires it)"
        self.scan = native.scan
        self._take = native.take
        self.events: list[Any] = []

    def take(self, *args: Any) -> list[Any]:
        taken: list[Any] = self._take(*args)
        self.events += [item for item in taken if isinstance(item, DecodedEvent)]
        return taken


async def test_failures_name_their_messages_when_the_c_reader_takes_only_some(
    app: RunningApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The C reader numbers the events it makes among its own; a message it leaves (an id
    that is a number, an event over the size limit) is taken the Python way between them,
    and each failure still names its own message (index and id)."""
    counted = _CountedTake()
    monkeypatch.setattr(segment_reader, "native", counted)
    key = await make_source(app.client, app.admin)
    await _enforce_a_total(app)

    def paid(message_id: str, **members: Any) -> dict[str, Any]:
        return {
            "type": "track",
            "event": "Paid",
            "userId": "u",
            "messageId": message_id,
            "properties": {"total": 1},
            **members,
        }

    batch = [
        paid("by-python", userId=7),  # a number: the Python reader's
        paid("bad", properties={}),
        paid("huge", properties={"total": 1, "blob": "x" * 300_000}),
        paid("ok"),
    ]
    content = json.dumps({"batch": batch}, separators=(",", ":")).encode()
    answer = await app.client.post("/v1/batch", headers=basic(key), content=content)
    assert answer.status_code == 200, answer.text
    failed = answer.json()["failed"]
    assert [(f["index"], f["id"], f["error"]) for f in failed] == [
        (1, "bad", "SchemaValidationFailed"),
        (2, "huge", "EventTooLarge"),
    ]
    assert [e["id"] for e in await bus_events(app)] == ["by-python", "ok"]
    assert [event.id for event in counted.events] == ["bad", "ok"]  # the C reader's

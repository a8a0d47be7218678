"""The Snowplow collector endpoints, in-process: the pixel and `tp2` POSTs become CloudEvents
`snowplow.<event>` with their JSON decoded, tracker retries are duplicates, and bad input gets
a clear 400 or 401 in Stellwerk's shape."""

from __future__ import annotations

import base64
import gzip
import json
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import RunningApp, app_running
from tests.tracking.support import bus_events, make_source

from stellwerk.config import load_settings
from stellwerk.tracking import CAPABILITY, Arrival, Binding, TrackingOpened
from stellwerk.tracking.routes_snowplow import PIXEL

TP2 = "/com.snowplowanalytics.snowplow/tp2"
PAYLOAD_DATA = "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4"
CONTEXTS = "iglu:com.snowplowanalytics.snowplow/contexts/jsonschema/1-0-1"
UNSTRUCT = "iglu:com.snowplowanalytics.snowplow/unstruct_event/jsonschema/1-0-0"
WEB_PAGE = {
    "schema": "iglu:com.snowplowanalytics.snowplow/web_page/jsonschema/1-0-0",
    "data": {"id": "p-1"},
}
ADD_TO_CART = {"schema": "iglu:com.acme/add_to_cart/jsonschema/1-0-2", "data": {"sku": "s-1"}}


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[RunningApp]:
    settings = load_settings(
        {"data_dir": str(tmp_path / "data"), "max_batch_events": 20, "max_body_bytes": 64 * 1024}
    )
    async with app_running(settings) as running:
        yield running


async def snowplow_source(app: RunningApp, name: str = "web", **settings: Any) -> str:
    return await make_source(app.client, app.admin, name, kind="snowplow", **settings)


def b64(value: Any, *, padded: bool = False) -> str:
    """URL-safe base64 of JSON, without padding unless asked (trackers send both)."""
    text = base64.urlsafe_b64encode(json.dumps(value).encode()).decode()
    return text if padded else text.rstrip("=")


def body(*events: Any) -> dict[str, Any]:
    return {"schema": PAYLOAD_DATA, "data": list(events)}


async def test_each_event_type_becomes_a_cloudevent_with_its_json_decoded(app: RunningApp) -> None:
    key = await snowplow_source(app)
    common = {"aid": key, "p": "web", "tv": "js-4.0.0", "dtm": "1764842400123", "duid": "d-1"}
    contexts = {"schema": CONTEXTS, "data": [WEB_PAGE]}
    events = [
        {"e": "pv", "eid": "e-pv", "url": "https://shop.example/", "cx": b64(contexts)},
        {"e": "pp", "eid": "e-pp", "pp_miy": "0", "pp_may": "800", "co": json.dumps(contexts)},
        {"e": "se", "eid": "e-se", "se_ca": "shop", "se_ac": "add", "se_va": "2.5", "uid": "u-1"},
        {
            "e": "ue",
            "eid": "e-ue",
            "ue_px": b64({"schema": UNSTRUCT, "data": ADD_TO_CART}, padded=True),
        },
        {"e": "ue", "eid": "e-ue2", "ue_pr": json.dumps({"schema": UNSTRUCT, "data": ADD_TO_CART})},
        {"e": "tr", "eid": "e-tr", "tr_id": "o-1", "tr_tt": "42.5", "ttm": "1764842400000"},
        {"e": "ti", "eid": "e-ti", "ti_id": "o-1", "ti_sk": "s-1", "ti_pr": "21.25", "ti_qu": "2"},
    ]
    answer = await app.client.post(TP2, json=body(*({**common, **e} for e in events)))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"accepted": 7, "dropped": 0}
    assert answer.headers["cache-control"] == "no-store"

    stored = await bus_events(app)
    assert [e["type"] for e in stored] == [
        "snowplow.page_view",
        "snowplow.page_ping",
        "snowplow.struct",
        "snowplow.add_to_cart",
        "snowplow.add_to_cart",
        "snowplow.transaction",
        "snowplow.transaction_item",
    ]
    assert [e["id"] for e in stored] == [e["eid"] for e in events]
    assert {e["source"] for e in stored} == {"/sources/web"}
    assert [e["subject"] for e in stored] == ["d-1", "d-1", "u-1", "d-1", "d-1", "d-1", "d-1"]
    # The true timestamp when the tracker was given one, else the device's.
    assert stored[0]["time"] == "2025-12-04T10:00:00.123000Z"
    assert stored[5]["time"] == "2025-12-04T10:00:00.000000Z"
    # What the collector adds (consent, enrichment) is in context.stellwerk: test_refine.py.
    for event in stored:
        assert set(event["data"].pop("context")) == {"stellwerk"}
    # The network user id the collector set (test_snowplow_cookie.py), the same for all.
    assert len({event["data"].pop("nuid") for event in stored}) == 1
    page_view = stored[0]["data"]
    assert page_view == {
        "e": "pv",
        "eid": "e-pv",
        "url": "https://shop.example/",
        "p": "web",
        "tv": "js-4.0.0",
        "dtm": "1764842400123",
        "duid": "d-1",
        "contexts": [WEB_PAGE],
    }
    assert "aid" not in json.dumps(stored), "the write key travels in no event"
    assert stored[1]["data"]["contexts"] == [WEB_PAGE]
    assert stored[3]["data"]["self_describing_event"] == ADD_TO_CART
    assert stored[4]["data"]["self_describing_event"] == ADD_TO_CART


async def test_the_pixel_answers_an_uncached_gif_and_stores_the_event(app: RunningApp) -> None:
    key = await snowplow_source(app)
    query = {
        "e": "pv",
        "eid": "px-1",
        "aid": key,
        "url": "https://shop.example/a",
        "cx": b64({"schema": CONTEXTS, "data": [WEB_PAGE]}),
    }
    answer = await app.client.get("/i", params=query)
    assert answer.status_code == 200, answer.text
    assert answer.content == PIXEL
    assert answer.headers["content-type"] == "image/gif"
    assert answer.headers["cache-control"] == "no-store"
    # A GIF89a of 1x1: what a browser's <img> takes.
    assert PIXEL.startswith(b"GIF89a")
    assert struct.unpack("<HH", PIXEL[6:10]) == (1, 1)  # the logical screen
    image = PIXEL.index(b",")  # the image descriptor: left, top, width, height
    assert struct.unpack("<HHHH", PIXEL[image + 1 : image + 9]) == (0, 0, 1, 1)
    assert PIXEL.endswith(b";")

    # A HEAD (a link checker's) stores nothing.
    head = await app.client.head("/i", params={**query, "eid": "px-2"})
    assert (head.status_code, head.headers["content-type"]) == (200, "image/gif")
    assert head.headers["cache-control"] == "no-store"
    [event] = await bus_events(app)
    assert (event["type"], event["id"]) == ("snowplow.page_view", "px-1")
    assert event["data"]["contexts"] == [WEB_PAGE]


async def test_a_retried_event_is_stored_once(app: RunningApp) -> None:
    key = await snowplow_source(app)
    event = {"e": "se", "eid": "same", "aid": key, "se_ca": "c", "se_ac": "a"}
    for _ in range(2):
        assert (await app.client.post(TP2, json=body(dict(event)))).status_code == 200
        assert (await app.client.get("/i", params=event)).status_code == 200
    assert [e["id"] for e in await bus_events(app)] == ["same"]


async def test_the_source_chooses_the_bus(app: RunningApp) -> None:
    assert (await app.client.put("/v1/buses/web", headers=app.admin)).status_code == 201
    key = await snowplow_source(app, bus="web")
    assert (await app.client.get("/i", params={"e": "pv", "aid": key})).status_code == 200
    assert [e["type"] for e in await bus_events(app, "web")] == ["snowplow.page_view"]
    assert await bus_events(app) == []
    # The bus deleted under the source: 404 until the source names another.
    assert (await app.client.delete("/v1/buses/web", headers=app.admin)).status_code == 204
    for answer in (
        await app.client.get("/i", params={"e": "pv", "aid": key}),
        await app.client.post(TP2, json=body({"e": "pv", "aid": key})),
    ):
        assert (answer.status_code, answer.json()["error"]) == (404, "NotFound")


async def test_the_app_id_must_name_a_snowplow_source(app: RunningApp) -> None:
    segment_key = await make_source(app.client, app.admin, "site")
    key = await snowplow_source(app)
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"e": "pv"}, 401, "Unauthorized"),
        ({"e": "pv", "aid": "my-app"}, 401, "Unauthorized"),
        ({"e": "pv", "aid": "wk_0123456789abcdef_not-the-right-secret"}, 401, "Unauthorized"),
        ({"e": "pv", "aid": segment_key}, 403, "WrongSourceKind"),
    ]
    for event, status, error in cases:
        for answer in (
            await app.client.post(TP2, json=body(event)),
            await app.client.get("/i", params=event),
        ):
            assert answer.status_code == status, (event, answer.text)
            assert answer.json()["error"] == error
            assert answer.json()["message"]
            assert "www-authenticate" not in answer.headers
    # ... and the Segment API takes no snowplow source's key.
    refused = await app.client.post(
        "/v1/track", json={"writeKey": key, "userId": "u", "event": "E"}
    )
    assert (refused.status_code, refused.json()["code"]) == (403, "WrongSourceKind")
    assert await bus_events(app) == []


async def refused(app: RunningApp, answer_of: Any, error: str, field: str | None = None) -> None:
    answer = await answer_of
    assert answer.status_code == 400, answer.text
    got = answer.json()
    assert got["error"] == error, got
    assert got["message"]
    if field is not None:
        assert got["field"] == field, got


async def test_bad_input_gets_a_clear_400(app: RunningApp) -> None:
    key = await snowplow_source(app)
    post, get = app.client.post, app.client.get

    def event(**fields: Any) -> dict[str, Any]:
        return {"e": "pv", "aid": key, **fields}

    await refused(app, post(TP2, content=b'{"schema": '), "InvalidJson")
    await refused(app, post(TP2, json=[event()]), "NotAnObject")
    await refused(
        app,
        post(TP2, json={"schema": "iglu:x/y/jsonschema/1-0-0", "data": []}),
        "InvalidBatch",
        "schema",
    )
    await refused(app, post(TP2, json={"schema": PAYLOAD_DATA, "data": {}}), "InvalidBatch", "data")
    await refused(
        app, post(TP2, content=b"not gzip", headers={"Content-Encoding": "gzip"}), "InvalidGzip"
    )
    brotli = await post(TP2, json=body(event()), headers={"Content-Encoding": "br"})
    assert (brotli.status_code, brotli.json()["error"]) == (415, "UnsupportedMediaType")
    for bad, error, field in [
        (event(e="xx"), "UnknownType", "e"),
        (event(e=None), "MissingField", "e"),
        (event(cx="!!!"), "InvalidBase64", "cx"),
        (event(cx="abcde"), "InvalidBase64", "cx"),
        (event(cx=base64.b64encode(b"\xff\xfe").decode()), "InvalidBase64", "cx"),
        (event(co="{nope"), "InvalidJson", "co"),
        (event(co=json.dumps({"schema": CONTEXTS, "data": {}})), "InvalidField", "co"),
        (event(co=json.dumps({"schema": CONTEXTS, "data": [{"data": 1}]})), "InvalidField", "co"),
        (event(co=json.dumps({"data": []})), "InvalidField", "co"),
        (event(e="ue"), "MissingField", "ue_px"),
        (
            event(
                e="ue",
                ue_pr=json.dumps({"schema": UNSTRUCT, "data": {"schema": "nope", "data": {}}}),
            ),
            "InvalidField",
            "ue_pr",
        ),
        (
            event(e="ue", ue_px=b64({"schema": UNSTRUCT, "data": ADD_TO_CART}), ue_pr="{}"),
            "InvalidField",
            "ue_px",
        ),
        (event(eid=""), "InvalidField", "eid"),
        (event(contexts="[]"), "InvalidField", "contexts"),
    ]:
        await refused(app, post(TP2, json=body(dict(bad))), error, field)
        await refused(app, get("/i", params=bad), error, field)
    await refused(app, post(TP2, json=body(event(url={"no": "objects"}))), "InvalidField", "url")
    await refused(app, post(TP2, json=body(event(eid=7))), "InvalidField", "eid")
    await refused(app, post(TP2, json=body(event(co=7))), "InvalidField", "co")
    await refused(app, post(TP2, json=body(event(e="ue", ue_pr=7.5))), "InvalidField", "ue_pr")
    await refused(app, post(TP2, json=body(event(cx=7))), "InvalidBase64", "cx")
    assert await bus_events(app) == []


async def test_oversized_bodies_are_400s_that_trackers_do_not_retry(app: RunningApp) -> None:
    key = await snowplow_source(app)
    many = body(*({"e": "pv", "aid": key} for _ in range(21)))
    await refused(app, app.client.post(TP2, json=many), "BatchTooLarge", "data")
    bomb = gzip.compress(json.dumps(body({"e": "pv", "aid": key, "url": "x" * 100_000})).encode())
    await refused(
        app,
        app.client.post(TP2, content=bomb, headers={"Content-Encoding": "gzip"}),
        "PayloadTooLarge",
    )

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"schema": "' + PAYLOAD_DATA.encode() + b'", "data": ["'
        for _ in range(100):
            yield b"x" * 1024
        yield b'"]}'

    await refused(app, app.client.post(TP2, content=chunks()), "PayloadTooLarge")
    # One 413 stays: a declared Content-Length over the limit meets the process's body limit,
    # in front of every route (no tracker sends that much).
    declared = await app.client.post(TP2, content=b"x" * (64 * 1024 + 1))
    assert (declared.status_code, declared.json()["error"]) == (413, "PayloadTooLarge")
    assert await bus_events(app) == []


async def test_a_batch_keeps_its_valid_events_and_lists_the_others(app: RunningApp) -> None:
    key = await snowplow_source(app)
    other = await snowplow_source(app, "app")
    events: list[Any] = [
        {"e": "pv", "aid": key, "eid": "ok-1"},
        {"e": "boom", "aid": key, "eid": "bad-1"},
        {"e": "pv", "aid": other, "eid": "bad-2"},
        "not an object",
        {"e": "se", "aid": key, "eid": "ok-2", "se_ca": "c", "se_ac": "a"},
    ]
    answer = await app.client.post(TP2, json=body(*events))
    assert answer.status_code == 200, answer.text
    got = answer.json()
    assert (got["accepted"], got["dropped"]) == (2, 0)
    assert [(f["index"], f["error"], f.get("field"), f.get("id")) for f in got["failed"]] == [
        (1, "UnknownType", "e", "bad-1"),
        (2, "InvalidField", "aid", "bad-2"),
        (3, "NotAnObject", None, None),
    ]
    assert [e["id"] for e in await bus_events(app)] == ["ok-1", "ok-2"]


async def test_cors_follows_the_sources_allowed_origins(app: RunningApp) -> None:
    key = await snowplow_source(app, allowed_origins=["https://shop.example"])
    shop, evil = {"Origin": "https://shop.example"}, {"Origin": "https://evil.example"}
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    asked = await app.client.options(TP2, headers={**shop, **preflight})
    assert asked.status_code == 204
    assert asked.headers["access-control-allow-origin"] == "https://shop.example"
    assert asked.headers["access-control-allow-credentials"] == "true"
    assert "Content-Type" in asked.headers["access-control-allow-headers"]
    denied = await app.client.options(TP2, headers={**evil, **preflight})
    assert denied.status_code == 403
    assert "access-control-allow-origin" not in denied.headers

    event = {"e": "pv", "aid": key, "eid": "c-1"}
    sent = await app.client.post(TP2, json=body(event), headers=shop)
    assert sent.status_code == 200
    assert sent.headers["access-control-allow-origin"] == "https://shop.example"
    assert sent.headers["vary"] == "Origin"
    refused_post = await app.client.post(TP2, json=body(dict(event, eid="c-2")), headers=evil)
    assert (refused_post.status_code, refused_post.json()["error"]) == (403, "OriginNotAllowed")
    assert "access-control-allow-origin" not in refused_post.headers
    # The pixel carries no Origin from an <img>; a GET that does is checked the same way.
    pixel = await app.client.get("/i", params=dict(event, eid="c-3"), headers=evil)
    assert (pixel.status_code, pixel.json()["error"]) == (403, "OriginNotAllowed")
    pixel = await app.client.get("/i", params=dict(event, eid="c-4"), headers=shop)
    assert pixel.status_code == 200
    assert pixel.headers["access-control-allow-origin"] == "https://shop.example"
    assert [e["id"] for e in await bus_events(app)] == ["c-1", "c-4"]


async def test_refine_sees_snowplow_events_with_their_json_decoded(app: RunningApp) -> None:
    """Consent and enrichment plug in at `refine`: they get JSON, not base64, and the
    source's kind, and what they drop is answered as taken (the tracker must not resend it)."""
    key = await snowplow_source(app)
    seen: list[tuple[str, Any, str | None]] = []

    def refine(
        message: dict[str, Any], arrival: Arrival, binding: Binding
    ) -> dict[str, Any] | None:
        seen.append((binding.kind, message.get("contexts"), arrival.user_agent))
        return None if message.get("uid") == "no-consent" else message

    opened = app.services.capabilities[CAPABILITY.name]
    assert isinstance(opened, TrackingOpened)
    opened.collector.refine = refine
    contexts = b64({"schema": CONTEXTS, "data": [WEB_PAGE]})
    events = [
        {"e": "pv", "aid": key, "eid": "kept", "cx": contexts},
        {"e": "pv", "aid": key, "eid": "dropped", "uid": "no-consent"},
    ]
    answer = await app.client.post(TP2, json=body(*events), headers={"User-Agent": "shop/1"})
    assert answer.json() == {"accepted": 1, "dropped": 1}
    assert seen == [("snowplow", [WEB_PAGE], "shop/1"), ("snowplow", None, "shop/1")]
    assert [e["id"] for e in await bus_events(app)] == ["kept"]


async def test_a_buss_schema_checks_a_self_describing_events_decoded_data(
    app: RunningApp,
) -> None:
    """Iglu schemas are not fetched; a bus's JSON Schema for `snowplow.add_to_cart` checks the
    decoded event instead, and what it refuses is kept in the failed-events store."""
    key = await snowplow_source(app)
    enforce = await app.client.put(
        "/v1/buses/default", headers=app.admin, json={"schema_validation": "enforce"}
    )
    assert enforce.status_code == 200
    needs_sku = {
        "type": "object",
        "required": ["self_describing_event"],
        "properties": {
            "self_describing_event": {
                "type": "object",
                "properties": {"data": {"type": "object", "required": ["sku"]}},
            }
        },
    }
    made = await app.client.put(
        "/v1/schemas/snowplow.add_to_cart", headers=app.admin, json={"schema": needs_sku}
    )
    assert made.status_code == 201, made.text

    def cart(eid: str, data: dict[str, Any]) -> dict[str, Any]:
        envelope = {"schema": UNSTRUCT, "data": {"schema": ADD_TO_CART["schema"], "data": data}}
        return {"e": "ue", "aid": key, "eid": eid, "ue_px": b64(envelope)}

    events = [cart("ok", {"sku": "s-1"}), cart("bad", {"qty": 1}), {"e": "pv", "aid": key}]
    answer = await app.client.post(TP2, json=body(*events))
    assert answer.status_code == 200, answer.text
    (failure,) = answer.json()["failed"]
    assert (failure["index"], failure["id"], failure["error"]) == (
        1,
        "bad",
        "SchemaValidationFailed",
    )
    assert failure["field"].startswith("self_describing_event")  # the event's field, not data's
    assert len(await bus_events(app)) == 2
    kept = await app.client.get("/v1/buses/default/failed-events", headers=app.admin)
    assert [f["event"]["id"] for f in kept.json()["failed_events"]] == ["bad"]

"""Destinations as presets, end to end: the real Segment SDK sends to the app behind uvicorn,
the router matches each preset's rule, and delivery sends GA4's, Meta's and Segment's request
shapes to a local receiver, which decodes them strictly. Consent per destination: an event
without `advertising` never reaches the destination that needs it, and does reach the ones
needing only `analytics`."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import msgspec
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from segment.analytics.client import Client as SegmentClient
from tests.conftest import RunningApp, app_running, app_served, free_port
from tests.delivery.targets.support import Receiver, start_receiver
from tests.polling import eventually
from tests.tracking.support import bus_events, make_source

from stellwerk.config import load_settings

# --- The documented request shapes, decoded strictly (an unknown or missing member fails).


class Ga4Event(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    params: dict[str, Any]


class Ga4Body(msgspec.Struct, forbid_unknown_fields=True):
    """GA4 Measurement Protocol, `POST /mp/collect?measurement_id=&api_secret=`."""

    client_id: str
    user_id: str
    events: list[Ga4Event]


class MetaUserData(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    client_ip_address: str
    client_user_agent: str
    em: list[str] = []
    external_id: list[str] = []


class MetaEvent(msgspec.Struct, forbid_unknown_fields=True):
    event_name: str
    event_time: int
    event_id: str
    action_source: Literal["website"]
    event_source_url: str
    user_data: MetaUserData
    custom_data: dict[str, Any]


class MetaBody(msgspec.Struct, forbid_unknown_fields=True):
    """Meta Conversions API, `POST /{version}/{pixel_id}/events?access_token=`."""

    data: list[MetaEvent]
    test_event_code: str | None = None


class SegmentBody(msgspec.Struct, forbid_unknown_fields=True):
    """Segment's HTTP API, `POST /v1/batch` (the write key as the Basic user)."""

    batch: list[dict[str, Any]]


@dataclass
class Got:
    """Requests the receiver took, by destination: (query, body), and their headers."""

    requests: dict[str, list[tuple[dict[str, str], bytes]]] = field(default_factory=dict)
    headers: dict[str, list[dict[str, str]]] = field(default_factory=dict)

    def handler(self, kind: str) -> Any:
        async def record(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            assert request.content_type == "application/json"
            self.requests.setdefault(kind, []).append((dict(request.query), body))
            self.headers.setdefault(kind, []).append(dict(request.headers))
            return web.json_response({})

        return record

    def of(self, kind: str) -> list[tuple[dict[str, str], bytes]]:
        return self.requests.get(kind, [])


@dataclass
class Served:
    url: str
    client: httpx.AsyncClient
    admin: dict[str, str]
    receiver: Receiver
    got: Got


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    """The app behind uvicorn on loopback (so the real SDK can send), allowed to deliver to
    loopback, and a receiver for the three destinations."""
    receiver, runner = await start_receiver("127.0.0.1")
    got = Got()
    receiver.on("/ga4/mp/collect", got.handler("ga4"))
    receiver.on("/meta/v21.0/1234567890/events", got.handler("meta"))
    receiver.on("/segment/v1/batch", got.handler("segment"))
    settings = load_settings(
        {"data_dir": str(tmp_path / "data"), "port": free_port(), "allow_private_targets": "true"}
    )
    try:
        async with app_served(settings) as (url, app):
            yield Served(url, app.client, app.admin, receiver, got)
    finally:
        receiver.closing.set()
        await runner.cleanup()


def send(url: str, key: str, calls: list[dict[str, Any]]) -> None:
    """The Segment SDK's `track`, unchanged, for each call; then a flush."""
    errors: list[Exception] = []
    client = SegmentClient(
        key,
        host=url,
        on_error=lambda error, _batch: errors.append(error),
        max_retries=1,
        upload_interval=0.05,
    )
    try:
        for call in calls:
            client.track(**call)
        client.flush()
    finally:
        client.shutdown()
    assert errors == []


async def test_presets_deliver_their_shapes_only_to_destinations_with_consent(
    served: Served,
) -> None:
    client, admin, receiver = served.client, served.admin, served.receiver
    key = await make_source(client, admin)
    presets = [
        {
            "preset": "ga4",
            "measurement_id": "G-TEST1234",
            "api_secret": "s3cr3t-ga4",
            "base_url": receiver.url("/ga4"),
        },
        {
            "preset": "meta",
            "pixel_id": "1234567890",
            "access_token": "EAAB-token",
            "events": ["Order Completed"],
            "event_name": "Purchase",
            "base_url": receiver.url("/meta"),
        },
        {
            "preset": "segment",
            "name": "warehouse",
            "write_key": "wk-downstream",
            "types": ["track"],
            "base_url": receiver.url("/segment/"),
        },
    ]
    for preset in presets:
        made = await client.post("/v1/buses/default/destinations", headers=admin, json=preset)
        assert made.status_code == 201, made.text
    names = [
        r["name"]
        for r in (await client.get("/v1/buses/default/rules", headers=admin)).json()["rules"]
    ]
    assert sorted(names) == ["ga4", "meta", "warehouse"]

    agent = "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0"
    context: dict[str, Any] = {
        "userAgent": agent,
        "ip": "81.2.69.160",
        "page": {"url": "https://shop.example/checkout"},
    }
    analytics_only = {
        **context,
        "consent": {"purposes": ["analytics"]},
        # A forged claim, in a form the pattern language reads as the consent's path.
        "stellwerk.consent.purposes.advertising": True,
    }
    both = {**context, "consent": {"purposes": ["analytics", "advertising"]}}
    calls = [
        {
            "user_id": "u-1",
            "event": "Order Completed",
            "properties": {"total": 42.5, "currency": "EUR"},
            "context": analytics_only,
            "anonymous_id": "anon-1",
            "message_id": "m-analytics",
        },
        {
            "user_id": "u-2",
            "event": "Order Completed",
            "properties": {"total": 7},
            "context": both,
            "anonymous_id": "anon-2",
            "message_id": "m-both",
        },
    ]
    await asyncio.to_thread(send, served.url, key, calls)
    await eventually(
        lambda: len(served.got.of("ga4")) == 2 and len(served.got.of("segment")) == 2,
        what="GA4 and the Segment forward got both events",
    )
    # In log order after the first: once it reached Meta, the router has long passed the first.
    await asyncio.to_thread(
        send,
        served.url,
        key,
        [{**calls[1], "user_id": "u-3", "message_id": "m-later"}],
    )
    await eventually(lambda: len(served.got.of("meta")) >= 2, what="Meta got two events")
    await eventually(lambda: len(served.got.of("ga4")) == 3)

    # GA4: the documented query and body.
    ga4 = sorted(
        (msgspec.json.decode(body, type=Ga4Body) for _, body in served.got.of("ga4")),
        key=lambda b: b.user_id,
    )
    assert {frozenset(q.items()) for q, _ in served.got.of("ga4")} == {
        frozenset({"measurement_id": "G-TEST1234", "api_secret": "s3cr3t-ga4"}.items())
    }
    assert [(b.client_id, b.user_id) for b in ga4] == [
        ("anon-1", "u-1"),
        ("anon-2", "u-2"),
        ("anon-2", "u-3"),
    ]
    assert ga4[0].events == [
        Ga4Event(name="Order Completed", params={"total": 42.5, "currency": "EUR"})
    ]

    # Meta: never the event without advertising consent; the others in the documented shape.
    metas = [msgspec.json.decode(body, type=MetaBody) for _, body in served.got.of("meta")]
    assert {q["access_token"] for q, _ in served.got.of("meta")} == {"EAAB-token"}
    assert sorted(m.data[0].event_id for m in metas) == ["m-both", "m-later"]
    event = next(m.data[0] for m in metas if m.data[0].event_id == "m-both")
    assert event.event_name == "Purchase"
    assert event.action_source == "website"
    assert event.event_source_url == "https://shop.example/checkout"
    assert event.custom_data == {"total": 7}
    assert abs(event.event_time - time.time()) < 300  # the SDK's timestamp, Unix seconds
    assert event.user_data == MetaUserData(
        client_ip_address="81.2.69.0",
        client_user_agent=agent,
        external_id=[hashlib.sha256(b"u-2").hexdigest()],
    )

    # Segment: each message as stored, with the downstream write key as the Basic user.
    forwarded = [msgspec.json.decode(b, type=SegmentBody) for _, b in served.got.of("segment")]
    basic = "Basic " + base64.b64encode(b"wk-downstream:").decode()
    assert {h["Authorization"] for h in served.got.headers["segment"]} == {basic}
    messages = {f.batch[0]["messageId"]: f.batch[0] for f in forwarded}
    assert messages["m-analytics"]["event"] == "Order Completed"
    assert messages["m-analytics"]["type"] == "track"
    assert messages["m-analytics"]["context"]["stellwerk"]["consent"]["purposes"] == {
        "analytics": True
    }


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[RunningApp]:
    settings = load_settings({"data_dir": str(tmp_path / "data")})
    async with app_running(settings) as running:
        yield running


async def test_the_router_matches_a_destination_only_with_each_of_its_purposes(
    app: RunningApp,
) -> None:
    """The rule's own pattern, held against stored events: every purpose is required (AND),
    and a bot's event goes nowhere unless the destination takes bots."""
    key = await make_source(app.client, app.admin)
    preset = {
        "preset": "segment",
        "write_key": "k",
        "purposes": ["analytics", "advertising"],
    }
    made = await app.client.post("/v1/buses/default/destinations", headers=app.admin, json=preset)
    assert made.status_code == 201, made.text
    pattern = made.json()["pattern"]
    assert made.json()["targets"][0]["url"] == "https://api.segment.io/v1/batch"
    # Held against events below, not delivered: nothing of a test goes to the internet.
    rule = {k: made.json()[k] for k in ("pattern", "targets", "description")}
    disabled = await app.client.put(
        "/v1/buses/default/rules/segment",
        headers=app.admin,
        json={**rule, "state": "disabled"},
    )
    assert disabled.status_code == 200, disabled.text
    cases = {
        "none": [],
        "analytics": ["analytics"],
        "advertising": ["advertising"],
        "both": ["analytics", "advertising"],
        "more": ["analytics", "advertising", "personalisation"],
    }
    for message_id, purposes in cases.items():
        message = {
            "type": "track",
            "event": "E",
            "userId": "u",
            "messageId": message_id,
            "context": {"consent": {"purposes": purposes}},
        }
        answer = await app.client.post(
            "/v1/track",
            headers={"Authorization": _basic(key)},
            json=message,
        )
        assert answer.status_code == 200
    bot: dict[str, Any] = {"type": "track", "event": "E", "userId": "u", "messageId": "bot"}
    bot["context"] = {
        "consent": {"purposes": ["analytics", "advertising"]},
        "userAgent": "Googlebot/2.1 (+http://www.google.com/bot.html)",
    }
    headers = {"Authorization": _basic(key)}
    assert (await app.client.post("/v1/track", headers=headers, json=bot)).status_code == 200

    matched = set()
    for event in await bus_events(app):
        test = await app.client.post(
            "/v1/test-event-pattern",
            headers=app.admin,
            json={"event": event, "pattern": pattern},
        )
        assert test.status_code == 200, test.text
        if test.json()["result"]:
            matched.add(event["id"])
    assert matched == {"both", "more"}


def _basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"preset": "gtm"}, "$.preset"),
        ({"preset": "ga4", "api_secret": "x"}, "$.measurement_id"),
        ({"preset": "ga4", "measurement_id": "UA-1", "api_secret": "x"}, "$.measurement_id"),
        ({"preset": "ga4", "measurement_id": "G-ABCD", "api_secret": "a b"}, "$.api_secret"),
        (
            {"preset": "ga4", "measurement_id": "G-ABCD", "api_secret": "x", "purposes": []},
            "$.purposes",
        ),
        (
            {"preset": "ga4", "measurement_id": "G-ABCD", "api_secret": "x", "purposes": ["A"]},
            "$.purposes[0]",
        ),
        (
            {"preset": "ga4", "measurement_id": "G-ABCD", "api_secret": "x", "event_name": "1a"},
            "$.event_name",
        ),
        ({"preset": "meta", "pixel_id": "abc", "access_token": "t"}, "$.pixel_id"),
        (
            {"preset": "meta", "pixel_id": "12345", "access_token": "t", "base_url": "ftp://x"},
            "$.base_url",
        ),
        (
            {"preset": "meta", "pixel_id": "12345", "access_token": "t", "action_source": "x"},
            "$.action_source",
        ),
        ({"preset": "segment", "write_key": "k", "types": ["order"]}, "$.types[0]"),
        ({"preset": "segment", "write_key": "k", "surprise": 1}, "$.surprise"),
        ({"preset": "segment", "write_key": "k", "name": "a b"}, "$.name"),
    ],
)
async def test_bad_settings_are_refused_naming_the_field(
    app: RunningApp, body: dict[str, Any], field: str | None
) -> None:
    answer = await app.client.post("/v1/buses/default/destinations", headers=app.admin, json=body)
    assert 400 <= answer.status_code < 500, answer.text
    if field is not None:
        assert answer.status_code == 422, answer.text
        assert answer.json()["field"] == field
    assert (await app.client.get("/v1/buses/default/rules", headers=app.admin)).json() == {
        "rules": []
    }


async def test_a_destination_needs_an_admin_key_and_an_existing_bus(app: RunningApp) -> None:
    body = {"preset": "segment", "write_key": "k"}
    ingest = app.auth(app.bootstrap.ingest_key)
    assert (
        await app.client.post("/v1/buses/default/destinations", headers=ingest, json=body)
    ).status_code == 403
    assert (
        await app.client.post("/v1/buses/nope/destinations", headers=app.admin, json=body)
    ).status_code == 404


async def test_a_destination_replaces_its_own_rule_but_never_a_hand_made_one(
    app: RunningApp,
) -> None:
    body = {"preset": "segment", "write_key": "k", "types": ["track"]}
    path = "/v1/buses/default/destinations"
    assert (await app.client.post(path, headers=app.admin, json=body)).status_code == 201
    again = await app.client.post(path, headers=app.admin, json={**body, "purposes": ["x"]})
    assert again.status_code == 200, again.text
    assert again.json()["description"] == "tracking destination (segment), needs x"

    hand_made = {"pattern": {"type": ["order.created"]}, "targets": [{"id": "log", "type": "log"}]}
    put = await app.client.put("/v1/buses/default/rules/mine", headers=app.admin, json=hand_made)
    assert put.status_code == 201, put.text
    refused = await app.client.post(path, headers=app.admin, json={**body, "name": "mine"})
    assert refused.status_code == 409, refused.text
    assert refused.json()["field"] == "$.name"
    kept = await app.client.get("/v1/buses/default/rules/mine", headers=app.admin)
    assert kept.json()["pattern"] == hand_made["pattern"]


async def test_a_destinations_credential_is_sealed_and_shown_to_nobody(app: RunningApp) -> None:
    path = "/v1/buses/default/destinations"
    secrets = {"ga4": "hunter2-ga4-secret", "meta": "hunter2-meta-token", "segment": "hunter2-wk"}
    bodies = [
        {"preset": "ga4", "measurement_id": "G-ABCD1234", "api_secret": secrets["ga4"]},
        {"preset": "meta", "pixel_id": "123456", "access_token": secrets["meta"]},
        {"preset": "segment", "write_key": secrets["segment"]},
    ]
    for body in bodies:
        made = await app.client.post(path, headers=app.admin, json=body)
        assert made.status_code == 201, made.text
        assert "hunter2" not in made.text
    rules = await app.client.get("/v1/buses/default/rules", headers=app.admin)
    assert {r["targets"][0]["connection"] for r in rules.json()["rules"]} == {
        "tracking.default.ga4",
        "tracking.default.meta",
        "tracking.default.segment",
    }
    connections = await app.client.get("/v1/connections", headers=app.admin)
    assert "hunter2" not in rules.text + connections.text
    ga4 = await app.client.get("/v1/connections/tracking.default.ga4", headers=app.admin)
    assert ga4.json()["connection"] == {"type": "api_key_query", "parameter": "api_secret"}
    # At rest: in no file of the data directory (the control plane's database, its WAL, ...).
    for file in app.settings.data_dir.rglob("*"):
        if file.is_file():
            assert b"hunter2" not in file.read_bytes(), file

    # Posted again with another secret, the destination replaces its own connection ...
    again = {**bodies[0], "api_secret": "rotated"}
    assert (await app.client.post(path, headers=app.admin, json=again)).status_code == 200
    # ... but never a connection of that name made for something else.
    other = {"type": "api_key", "header": "X-Key", "value": "v"}
    put = await app.client.put(
        "/v1/connections/tracking.default.crm", headers=app.admin, json=other
    )
    assert put.status_code == 201, put.text
    refused = await app.client.post(path, headers=app.admin, json={**bodies[0], "name": "crm"})
    assert refused.status_code == 409, refused.text
    assert refused.json()["field"] == "$.name"
    assert (
        await app.client.get("/v1/buses/default/rules/crm", headers=app.admin)
    ).status_code == 404


_value = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
_SETTINGS = [
    "preset", "name", "purposes", "source", "events", "bots", "base_url", "timeout_seconds",
    "measurement_id", "api_secret", "event_name", "pixel_id", "access_token", "action_source",
    "api_version", "test_event_code", "write_key", "types",
]  # fmt: skip
_VALID = {
    "ga4": {"preset": "ga4", "measurement_id": "G-ABCD1234", "api_secret": "s"},
    "meta": {"preset": "meta", "pixel_id": "123456", "access_token": "t"},
    "segment": {"preset": "segment", "write_key": "k"},
}


@st.composite
def destination_bodies(draw: st.DrawFn) -> Any:
    """A valid preset with some settings made anything, or anything at all."""
    if draw(st.integers(1, 8)) == 8:
        return draw(_value)
    body: dict[str, Any] = dict(_VALID[draw(st.sampled_from(sorted(_VALID)))])
    for name in draw(st.lists(st.sampled_from(_SETTINGS), max_size=3)):
        body[name] = draw(_value | st.text(max_size=70))
    return body


async def test_no_destination_body_makes_the_server_fail(app: RunningApp) -> None:
    statuses: dict[int, int] = {}

    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=destination_bodies())
    def one(body: Any) -> None:
        bodies.append(body)

    bodies: list[Any] = []
    one()
    for body in bodies:
        answer = await app.client.post(
            "/v1/buses/default/destinations", headers=app.admin, json=body
        )
        statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
        assert answer.status_code < 500, (body, answer.text)
        if answer.status_code >= 400:
            assert answer.json()["error"], answer.text
    assert statuses.get(422, 0) >= 10, statuses
    assert statuses.get(201, 0) + statuses.get(200, 0) >= 5, statuses


async def test_deleting_a_destination_deletes_its_connection_unless_another_rule_uses_it(
    app: RunningApp,
) -> None:
    path = "/v1/buses/default/destinations"
    body = {"preset": "ga4", "measurement_id": "G-ABCD1234", "api_secret": "s"}
    for name in ("shop-ga4", "shared-ga4"):
        made = await app.client.post(path, headers=app.admin, json={**body, "name": name})
        assert made.status_code == 201, made.text

    async def status(method: str, url: str) -> int:
        return (await app.client.request(method, url, headers=app.admin)).status_code

    gone = await app.client.delete(f"{path}/shop-ga4", headers=app.admin)
    assert gone.status_code == 204, gone.text
    assert await status("GET", "/v1/buses/default/rules/shop-ga4") == 404
    assert await status("GET", "/v1/connections/tracking.default.shop-ga4") == 404
    assert await status("DELETE", f"{path}/shop-ga4") == 404

    # A hand-made rule on another bus that sends with the destination's connection keeps it.
    assert await status("PUT", "/v1/buses/other") == 201
    borrowed = {
        "pattern": {"type": ["order.created"]},
        "targets": [
            {
                "id": "ga4",
                "type": "http",
                "url": "https://www.google-analytics.com/mp/collect",
                "connection": "tracking.default.shared-ga4",
            }
        ],
    }
    put = await app.client.put("/v1/buses/other/rules/borrow", headers=app.admin, json=borrowed)
    assert put.status_code == 201, put.text
    assert await status("DELETE", f"{path}/shared-ga4") == 204
    assert await status("GET", "/v1/buses/default/rules/shared-ga4") == 404
    assert await status("GET", "/v1/connections/tracking.default.shared-ga4") == 200

    # A hand-made rule is not a destination: refused, and kept.
    refused = await app.client.delete("/v1/buses/other/destinations/borrow", headers=app.admin)
    assert (refused.status_code, refused.json()["field"]) == (409, "name")
    assert await status("GET", "/v1/buses/other/rules/borrow") == 200
    ingest = app.auth(app.bootstrap.ingest_key)
    denied = await app.client.delete("/v1/buses/other/destinations/borrow", headers=ingest)
    assert denied.status_code == 403

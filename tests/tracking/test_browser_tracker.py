"""The browser tracker's endpoints, in-process: `/t.js` is small, cached and gzipped; `/v1/b`
takes Segment batches from a `browser` source and sets the visitor cookie on the messages that
state consent; `/v1/b/settings` tells the script whether it must wait for consent."""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import RunningApp, app_running
from tests.tracking.support import bus_events, make_source

from stellwerk.config import load_settings
from stellwerk.tracking import browser, routes_browser

SHOP = "http://shop.example"


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[RunningApp]:
    settings = load_settings({"data_dir": str(tmp_path / "data")})
    async with app_running(settings) as running:
        yield running


def message(n: int, *, consent: list[str] | None = None) -> dict[str, Any]:
    context: dict[str, Any] = {"library": {"name": "stellwerk.js", "version": "1"}}
    if consent is not None:
        context["consent"] = {"purposes": consent}
    return {
        "type": "track",
        "event": "Order Completed",
        "properties": {"total": n},
        "messageId": f"m-{n}",
        "anonymousId": f"page-{n}",
        "context": context,
    }


def test_the_script_is_at_most_6_kb_gzipped() -> None:
    script = browser.load_script()
    assert len(script.gzipped) <= 6 * 1024
    assert gzip.decompress(script.gzipped) == script.plain
    assert b"sendBeacon" in script.plain
    assert b"keepalive" in script.plain


async def test_the_script_is_served_gzipped_and_cached(app: RunningApp) -> None:
    plain = await app.client.get("/t.js", headers={"Accept-Encoding": "identity"})
    assert plain.status_code == 200
    assert plain.headers["content-type"].startswith("text/javascript")
    assert "content-encoding" not in plain.headers
    assert plain.headers["cache-control"] == "public, max-age=3600"
    assert plain.headers["vary"] == "Accept-Encoding"
    assert plain.content == browser.load_script().plain

    zipped = await app.client.get("/t.js", headers={"Accept-Encoding": "gzip, br"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert int(zipped.headers["content-length"]) <= 6 * 1024
    assert zipped.content == plain.content  # httpx undid the gzip
    assert zipped.headers["etag"] != plain.headers["etag"]  # two representations

    again = await app.client.get(
        "/t.js", headers={"Accept-Encoding": "gzip", "If-None-Match": zipped.headers["etag"]}
    )
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == zipped.headers["etag"]
    refused = await app.client.get("/t.js", headers={"Accept-Encoding": "gzip;q=0"})
    assert "content-encoding" not in refused.headers


async def test_settings_say_whether_consent_comes_first(app: RunningApp) -> None:
    strict = await make_source(
        app.client, app.admin, "strict", kind="browser", consent_purposes=["analytics", "ads"]
    )
    lax = await make_source(
        app.client,
        app.admin,
        "lax",
        kind="browser",
        consent_purposes=["analytics"],
        without_consent="anonymous",
    )
    open_ = await make_source(app.client, app.admin, "open", kind="browser")
    segment = await make_source(app.client, app.admin, "server")
    answer = await app.client.get(f"/v1/b/settings?writeKey={strict}")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"consentRequired": True, "purposes": ["ads", "analytics"]}
    assert "set-cookie" not in answer.headers
    # Kept anonymously without consent, or every event kept: the script sends at once.
    answer = await app.client.get("/v1/b/settings", params={"writeKey": lax})
    assert answer.json() == {"consentRequired": False, "purposes": ["analytics"]}
    answer = await app.client.get("/v1/b/settings", params={"writeKey": open_})
    assert answer.json() == {"consentRequired": False, "purposes": []}

    unknown = await app.client.get("/v1/b/settings")
    assert unknown.status_code == 401
    assert unknown.json()["code"] == "Unauthorized"
    wrong = await app.client.get("/v1/b/settings", params={"writeKey": segment})
    assert wrong.status_code == 403
    assert wrong.json()["code"] == "WrongSourceKind"
    foreign = await app.client.get(
        "/v1/b/settings", params={"writeKey": strict}, headers={"Origin": SHOP}
    )
    assert foreign.status_code == 403
    assert foreign.json()["code"] == "OriginNotAllowed"


async def test_the_collector_sets_the_visitor_cookie_and_reuses_it(app: RunningApp) -> None:
    key = await make_source(
        app.client,
        app.admin,
        kind="browser",
        allowed_origins=[SHOP],
        consent_purposes=["analytics"],
        without_consent="anonymous",
    )
    body = {"writeKey": key, "batch": [message(1, consent=["analytics"]), message(2)]}
    first = await app.client.post(
        "/v1/b",
        content=json.dumps(body),  # as the script sends it: text/plain, no preflight
        headers={"Origin": SHOP, "Content-Type": "text/plain"},
    )
    assert first.status_code == 200, first.text
    assert first.json() == {"success": True}
    assert first.headers["access-control-allow-origin"] == SHOP
    assert first.headers["access-control-allow-credentials"] == "true"
    cookie = first.headers["set-cookie"]
    name, _, rest = cookie.partition("=")
    visitor, *attributes = rest.split("; ")
    assert name == browser.COOKIE
    assert browser.visitor_of(visitor) == visitor
    assert attributes == ["Max-Age=34560000", "Path=/", "SameSite=Lax", "HttpOnly"]

    app.client.cookies.clear()
    later = {"writeKey": key, "batch": [message(3, consent=["analytics", "marketing"])]}
    second = await app.client.post(
        "/v1/b", json=later, headers={"Cookie": f"{browser.COOKIE}={visitor}"}
    )
    assert second.status_code == 200, second.text
    assert second.headers["set-cookie"].startswith(f"{browser.COOKIE}={visitor};")

    events = await bus_events(app)
    ids = {e["id"]: e["data"].get("anonymousId") for e in events}
    # With consent: the cookie's id, the same on both requests. Without: kept anonymously.
    assert ids == {"m-1": visitor, "m-2": None, "m-3": visitor}


async def test_no_cookie_without_consent_and_a_forged_one_is_replaced(app: RunningApp) -> None:
    key = await make_source(
        app.client,
        app.admin,
        kind="browser",
        consent_purposes=["analytics"],
        without_consent="anonymous",
    )
    app.client.cookies.clear()
    bare = await app.client.post("/v1/b", json={"writeKey": key, "batch": [message(1)]})
    assert bare.status_code == 200, bare.text
    assert "set-cookie" not in bare.headers

    forged = await app.client.post(
        "/v1/b",
        json={"writeKey": key, "batch": [message(2, consent=["analytics"])]},
        headers={"Cookie": f"{browser.COOKIE}=admin"},
    )
    visitor = forged.headers["set-cookie"].partition("=")[2].partition(";")[0]
    assert visitor != "admin"
    assert browser.visitor_of(visitor) == visitor
    events = await bus_events(app)
    assert [e["data"].get("anonymousId") for e in events] == [None, visitor]


async def test_bad_requests_are_4xx(app: RunningApp) -> None:
    key = await make_source(app.client, app.admin, kind="browser")
    segment = await make_source(app.client, app.admin, "server")
    cases = [
        (b"{not json", 400, "InvalidJson"),
        (b'{"batch": []}', 401, "Unauthorized"),
        (b'{"writeKey": "%s", "batch": 3}' % key.encode(), 400, "InvalidBatch"),
        (b'{"writeKey": "%s", "batch": []}' % segment.encode(), 403, "WrongSourceKind"),
        (b'{"writeKey": "%s", "batch": [{"type": "nope"}]}' % key.encode(), 400, "UnknownType"),
    ]
    for body, status, code in cases:
        answer = await app.client.post("/v1/b", content=body)
        assert answer.status_code == status, (body, answer.text)
        assert answer.json()["code"] == code
        assert "set-cookie" not in answer.headers


async def test_the_cookie_is_secure_over_https(app: RunningApp) -> None:
    key = await make_source(app.client, app.admin, kind="browser")
    body = {"writeKey": key, "batch": [message(1, consent=["analytics"])]}
    answer = await app.client.post("https://stellwerk/v1/b", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.headers["set-cookie"].endswith("; SameSite=Lax; HttpOnly; Secure")


async def test_the_fast_path_answers_as_the_route(app: RunningApp) -> None:
    """A GET is answered ahead of the app's stack; a HEAD goes on to the route: the same
    headers either way, for each of the four answers."""
    etags = {False: browser.load_script().etag, True: browser.load_script().gzip_etag}
    for gzipped in (False, True):
        for current in (False, True):
            headers = {"Accept-Encoding": "gzip" if gzipped else "identity"}
            if current:
                headers["If-None-Match"] = f'"stale", {etags[gzipped]}'
            fast = await app.client.get("/t.js?v=2", headers=headers)
            routed = await app.client.head("/t.js", headers=headers)
            assert fast.status_code == routed.status_code == (304 if current else 200)
            assert fast.headers == routed.headers
            assert fast.headers["etag"] == etags[gzipped]
    assert routes_browser.script_answer({"path": "/t.js", "method": "POST"}) is None

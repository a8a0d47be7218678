"""The Segment API's POSTs answered ahead of the app's stack (a `Deferred` fast path): which
requests it takes, that its answers are the route's byte for byte, and the body limits on
both sides of it."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import RunningApp, app_running
from tests.tracking.support import bus_events, make_source

from stellwerk.api import Deferred
from stellwerk.config import load_settings
from stellwerk.tracking import CAPABILITY, TrackingOpened
from stellwerk.tracking.routes_segment import Reply
from stellwerk.tracking.routes_segment import fast_path as segment_fast_path

LIMIT = 64 * 1024


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[RunningApp]:
    settings = load_settings({"data_dir": str(tmp_path / "data"), "max_body_bytes": LIMIT})
    async with app_running(settings) as running:
        yield running


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def scope(path: str, method: str = "POST", **more: Any) -> dict[str, Any]:
    return {"type": "http", "path": path, "method": method, "headers": [], **more}


def test_the_fast_path_takes_the_segment_posts_and_leaves_the_rest_to_the_app(
    app: RunningApp,
) -> None:
    opened = app.services.capabilities[CAPABILITY.name]
    assert isinstance(opened, TrackingOpened)
    answerer = segment_fast_path(opened)
    for path in ("/v1/batch", "/v1/import", "/v1/track", "/v1/alias"):
        taken = answerer(scope(path, headers=[(b"content-length", b"120")]))
        assert isinstance(taken, Deferred)
        assert taken.route == path
    left = [
        scope("/v1/batch", "OPTIONS"),  # a preflight
        scope("/v1/batch", root_path="/shop"),
        scope("/v1/b"),  # the browser tracker's: it sets a cookie, on its route
        scope("/v1/batchx"),
        # Declared over the limit, or not a number: refused in front of every route.
        scope("/v1/batch", headers=[(b"content-length", str(LIMIT + 1).encode())]),
        scope("/v1/batch", headers=[(b"content-length", b"12a")]),
        # Through a proxy: whether to trust its X-Forwarded-For is the app's to decide (its
        # proxy-headers layer runs behind the fast paths), and the address is enriched.
        scope("/v1/batch", headers=[(b"x-forwarded-for", b"81.2.69.160")]),
    ]
    for each in left:
        assert answerer(each) is None, each


def test_a_reply_is_the_same_whether_the_route_or_the_fast_path_sends_it() -> None:
    reply = Reply(429, b'{"success":false}', {"Retry-After": "2", "Vary": "Origin"})
    response = reply.response()
    answer = reply.answer("/v1/batch")
    assert (answer.status, answer.body) == (response.status_code, bytes(response.body))
    assert sorted(answer.headers) == sorted(response.raw_headers)


async def test_answers_through_the_fast_path_are_the_segment_apis(app: RunningApp) -> None:
    key = await make_source(app.client, app.admin)
    batch = {"batch": [{"type": "track", "event": "E", "userId": "u", "messageId": "m-1"}]}
    ok = await app.client.post("/v1/batch", headers=basic(key), json=batch)
    assert (ok.status_code, ok.content) == (200, b'{"success":true}')
    assert ok.headers["content-type"] == "application/json"
    assert [e["id"] for e in await bus_events(app)] == ["m-1"]
    wrong = await app.client.post("/v1/batch", headers=basic("wk_0000000000000000_x"), json=batch)
    assert wrong.status_code == 401
    assert wrong.json()["code"] == "Unauthorized"
    assert "www-authenticate" not in wrong.headers

    # A chunked body (no Content-Length) over the limit: Segment's shape, from the fast path.
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b" " * (LIMIT // 2)

    chunked = await app.client.post("/v1/batch", headers=basic(key), content=chunks())
    assert chunked.status_code == 413
    assert (chunked.json()["code"], chunked.json()["error"]) == ("PayloadTooLarge",) * 2
    # Declared over it: the process's own refusal, Stellwerk's shape (no `code`).
    declared = await app.client.post("/v1/batch", headers=basic(key), content=b" " * (LIMIT + 1))
    assert declared.status_code == 413
    assert declared.json()["error"] == "PayloadTooLarge"
    assert "code" not in declared.json()
    # Answered by the fast path, counted under the route as the app counts it (the declared
    # refusal comes before any route, and is not counted under one).
    metrics = await app.client.get("/metrics")
    lines = [
        line
        for line in metrics.text.splitlines()
        if line.startswith("stellwerk_http_requests_total") and 'route="/v1/batch"' in line
    ]
    counted = {line.split('status="')[1].split('"')[0]: float(line.split()[-1]) for line in lines}
    assert counted == {"200": 1.0, "401": 1.0, "413": 1.0}, lines

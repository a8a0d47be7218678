"""Random batches to the browser tracker's `/v1/b`, valid and not, with consent stated or not
and the visitor cookie good, forged or absent, never make the collector fail: every answer is a
200 or a 4xx in Segment's shape, and only a 200 sets the cookie, always a UUID the collector
could have minted."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.conftest import RunningApp, app_running
from tests.tracking.support import make_source
from tests.tracking.test_segment_fuzz import _json, messages, sometimes

from stellwerk.config import load_settings
from stellwerk.tracking import browser

SHOP = "https://shop.example"


@dataclass
class Fuzzed:
    app: RunningApp
    write_key: str
    statuses: dict[int, int]
    cookies: int = 0


@pytest.fixture
async def fuzzed(tmp_path: Path) -> AsyncIterator[Fuzzed]:
    settings = load_settings(
        {"data_dir": str(tmp_path / "data"), "tenant_request_rate": 0, "max_batch_events": 20}
    )
    async with app_running(settings) as app:
        key = await make_source(
            app.client,
            app.admin,
            kind="browser",
            allowed_origins=[SHOP],
            consent_purposes=["analytics"],
            without_consent="anonymous",
        )
        fuzzed = Fuzzed(app, key, {})
        yield fuzzed
    # Not hollow: both kinds of answer came back, and cookies were set.
    assert fuzzed.statuses.get(200, 0) >= 10, fuzzed.statuses
    assert sum(n for s, n in fuzzed.statuses.items() if 400 <= s < 500) >= 10, fuzzed.statuses
    assert fuzzed.cookies >= 5


_consents = st.sampled_from([["analytics"], ["analytics", "ads"], ["ads"], []]) | _json


@st.composite
def consented(draw: st.DrawFn) -> dict[str, Any]:
    message: dict[str, Any] = draw(messages())
    # Mostly a consent as the script states it (hypothesis's simplest draws lean that way).
    if not sometimes(draw, 3) and isinstance(message.get("context", {}), dict):
        context = dict(message.get("context", {}))
        stated = draw(_json) if sometimes(draw, 4) else {"purposes": draw(_consents)}
        context["consent"] = stated
        message["context"] = context
    return message


@st.composite
def requests(draw: st.DrawFn, write_key: str) -> tuple[bytes, dict[str, str]]:
    body: Any = {
        "batch": draw(
            _json if sometimes(draw, 8) else st.lists(consented(), min_size=1, max_size=20)
        )
    }
    if not sometimes(draw, 8):
        body["writeKey"] = write_key
    content = json.dumps(body).encode()
    if sometimes(draw, 8):
        content = content[: len(content) // 2]
    headers = {"Content-Type": "text/plain"}
    cookie = draw(st.sampled_from(["none", "good", "forged"]))
    if cookie == "good":
        headers["Cookie"] = f"{browser.COOKIE}={uuid.uuid4()}"
    elif cookie == "forged":
        value = draw(st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=40))
        headers["Cookie"] = f"{browser.COOKIE}={value.replace(';', '')}"
    if sometimes(draw, 3):
        headers["Origin"] = draw(st.sampled_from([SHOP, "https://evil.example"]))
    return content, headers


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_no_random_batch_makes_the_browser_collector_fail(
    fuzzed: Fuzzed, data: st.DataObject
) -> None:
    content, headers = data.draw(requests(fuzzed.write_key))
    fuzzed.app.client.cookies.clear()
    answer = await fuzzed.app.client.post("/v1/b", content=content, headers=headers)
    fuzzed.statuses[answer.status_code] = fuzzed.statuses.get(answer.status_code, 0) + 1
    assert answer.status_code < 500, answer.text
    body = answer.json()
    set_cookie = answer.headers.get("set-cookie")
    if answer.status_code == 200:
        assert body["success"] is True
    else:
        assert answer.status_code >= 400
        assert body["success"] is False
        assert body["message"]
        assert set_cookie is None
    if set_cookie is not None:
        fuzzed.cookies += 1
        visitor = set_cookie.partition("=")[2].partition(";")[0]
        assert browser.visitor_of(visitor) == visitor

"""Random Segment requests, valid and not, never make the collector fail: every answer is a 200
or a 4xx in Segment's error shape. The requests are mostly what an SDK sends, with fields,
bodies, encodings, keys and origins made anything now and then, so that many pass and many do
not (the fixture checks both happened)."""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.conftest import RunningApp, app_running
from tests.tracking.support import make_source

from stellwerk.config import load_settings


@dataclass
class Fuzzed:
    app: RunningApp
    write_key: str
    statuses: dict[int, int]


@pytest.fixture
async def fuzzed(tmp_path: Path) -> AsyncIterator[Fuzzed]:
    settings = load_settings(
        {"data_dir": str(tmp_path / "data"), "tenant_request_rate": 0, "max_batch_events": 20}
    )
    async with app_running(settings) as app:
        key = await make_source(app.client, app.admin, allowed_origins=["https://shop.example"])
        fuzzed = Fuzzed(app, key, {})
        yield fuzzed
    # Not hollow: both kinds of answer came back.
    assert fuzzed.statuses.get(200, 0) >= 20, fuzzed.statuses
    assert sum(n for s, n in fuzzed.statuses.items() if 400 <= s < 500) >= 20, fuzzed.statuses


_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)
# Mostly what an SDK sends, sometimes anything: so that many requests pass and many do not.
_ids = st.one_of(st.text(min_size=1, max_size=12), st.integers(), st.none(), _json)
_types = st.sampled_from(["track", "identify", "page", "screen", "group", "alias", "boom"]) | _json


def sometimes(draw: st.DrawFn, one_in: int) -> bool:
    """True about once in `one_in` draws; hypothesis's simplest draw (the low end) is False."""
    return draw(st.integers(1, one_in)) == one_in


_FIELDS = [
    "type",
    "userId",
    "anonymousId",
    "messageId",
    "event",
    "groupId",
    "previousId",
    "name",
    "timestamp",
    "sentAt",
    "properties",
    "traits",
    "context",
    "integrations",
]


@st.composite
def messages(draw: st.DrawFn) -> dict[str, Any]:
    """A message an SDK might send, then, now and then, some of its fields made anything."""
    kind = draw(st.sampled_from(["track", "identify", "page", "screen", "group", "alias"]))
    message: dict[str, Any] = {"type": kind, "userId": draw(st.text(min_size=1, max_size=8))}
    if draw(st.booleans()):
        message["messageId"] = draw(st.uuids().map(str))
    if kind == "track":
        message["event"] = draw(st.text(min_size=1, max_size=20))
    elif kind == "group":
        message["groupId"] = draw(_ids)
    elif kind == "alias":
        message["previousId"] = draw(_ids)
    for name in ("properties", "traits", "context"):
        if draw(st.booleans()):
            message[name] = draw(st.dictionaries(st.text(max_size=8), _json, max_size=4))
    if draw(st.booleans()):
        message["timestamp"] = draw(st.datetimes()).isoformat() + "Z"
    if sometimes(draw, 3):
        for name in draw(st.lists(st.sampled_from(_FIELDS), min_size=1, max_size=3)):
            message[name] = draw(_json)
    if sometimes(draw, 4):
        message.update(draw(st.dictionaries(st.text(max_size=8), _json, max_size=3)))
    return message


_paths = st.sampled_from(
    ["/v1/track", "/v1/identify", "/v1/page", "/v1/screen", "/v1/group", "/v1/alias", "/v1/batch"]
)


@st.composite
def requests(draw: st.DrawFn, write_key: str) -> tuple[str, bytes, dict[str, str]]:
    path = draw(_paths)
    if path == "/v1/batch":
        batch = _json if sometimes(draw, 8) else st.lists(messages(), max_size=25)
        body: Any = {"batch": draw(batch)}
        if sometimes(draw, 3):
            body["context"] = draw(_json)
    else:
        body = draw(_json) if sometimes(draw, 8) else draw(messages())
    headers: dict[str, str] = {}
    key_in = draw(st.sampled_from(["basic"] * 3 + ["body"] * 3 + ["none", "wrong", "garbage"]))
    if key_in == "basic":
        headers["Authorization"] = "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()
    elif key_in == "body" and isinstance(body, dict):
        body["writeKey"] = write_key
    elif key_in == "wrong":
        headers["Authorization"] = "Basic " + base64.b64encode(b"wk_0000000000000000_x:").decode()
    elif key_in == "garbage":
        headers["Authorization"] = draw(st.text(st.characters(min_codepoint=32, max_codepoint=126)))
    content = json.dumps(body).encode()
    if sometimes(draw, 8):
        content = (
            draw(st.binary(max_size=64)) if draw(st.booleans()) else content[: len(content) // 2]
        )
    if sometimes(draw, 3):
        headers["Content-Encoding"] = "gzip"
        if not sometimes(draw, 4):
            content = gzip.compress(content)
    if sometimes(draw, 3):
        headers["Origin"] = draw(st.sampled_from(["https://shop.example", "https://evil.example"]))
    return path, content, headers


@settings(
    max_examples=120,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_no_random_segment_request_makes_the_collector_fail(
    fuzzed: Fuzzed, data: st.DataObject
) -> None:
    path, content, headers = data.draw(requests(fuzzed.write_key))
    answer = await fuzzed.app.client.post(path, content=content, headers=headers)
    fuzzed.statuses[answer.status_code] = fuzzed.statuses.get(answer.status_code, 0) + 1
    assert answer.status_code < 500, answer.text
    body = answer.json()
    if answer.status_code == 200:
        assert body["success"] is True
    else:
        assert answer.status_code >= 400
        assert body["success"] is False
        assert isinstance(body["code"], str)
        assert body["message"]

"""Random Snowplow requests, valid and not, never make the collector fail: every pixel query and
every `tp2` body gets a 200 or a 4xx in Stellwerk's error shape. The events are mostly what a
tracker sends, with fields, JSON, base64, bodies, encodings, app ids and origins made anything
now and then, so that many pass and many do not (the fixture checks both happened)."""

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
from tests.tracking.test_segment_fuzz import sometimes

from stellwerk.config import load_settings
from stellwerk.tracking.routes_snowplow import PIXEL

TP2 = "/com.snowplowanalytics.snowplow/tp2"
PAYLOAD_DATA = "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4"
CONTEXTS = "iglu:com.snowplowanalytics.snowplow/contexts/jsonschema/1-0-1"
UNSTRUCT = "iglu:com.snowplowanalytics.snowplow/unstruct_event/jsonschema/1-0-0"


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
        key = await make_source(
            app.client, app.admin, "web", kind="snowplow", allowed_origins=["https://shop.example"]
        )
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
_numbers = st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.booleans()
# What a URL can carry: text without lone surrogates.
_url_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
_schemas = st.sampled_from(
    [
        "iglu:com.acme/add_to_cart/jsonschema/1-0-0",
        "iglu:com.snowplowanalytics.snowplow/web_page/jsonschema/1-0-0",
        "iglu:x/y/z/1-0",
        "nope",
    ]
)
_self_describing = st.fixed_dictionaries({"schema": _schemas, "data": _json})
_FIELDS = ["e", "eid", "cx", "co", "ue_px", "ue_pr", "dtm", "ttm", "uid", "url", "contexts"]


def encoded(draw: st.DrawFn, value: Any, as_base64: bool, values: st.SearchStrategy[Any]) -> Any:
    """JSON as a tracker sends it: plain, or URL-safe base64 with or without padding; or, now
    and then, something that is neither (anything of `values`, or JSON cut short)."""
    if sometimes(draw, 4):
        return draw(values | _numbers)
    text = json.dumps(value)
    if sometimes(draw, 6):
        text = text[: draw(st.integers(0, len(text)))]
    if not as_base64:
        return text
    coded = base64.urlsafe_b64encode(text.encode("utf-8", "surrogatepass")).decode()
    return coded.rstrip("=") if draw(st.booleans()) else coded


@st.composite
def events(draw: st.DrawFn, write_key: str, values: st.SearchStrategy[Any]) -> dict[str, Any]:
    """An event a tracker might send, then, now and then, some of its fields made anything of
    `values` (text in a query; any JSON in a body)."""
    code = draw(st.sampled_from(["pv", "pp", "se", "ue", "tr", "ti", "xx"]))
    event: dict[str, Any] = {"e": code, "aid": write_key, "p": "web", "tv": "py-1.1.0"}
    if draw(st.booleans()):
        event["eid"] = draw(st.uuids().map(str))
    if draw(st.booleans()):
        event["dtm"] = str(draw(st.integers(-(2**40), 2**50)))
    if draw(st.booleans()):
        event["uid"] = draw(_url_text)
    as_base64 = draw(st.booleans())
    if draw(st.booleans()):
        contexts = {"schema": CONTEXTS, "data": draw(st.lists(_self_describing, max_size=3))}
        event["cx" if as_base64 else "co"] = encoded(draw, contexts, as_base64, values)
    if code == "ue" and not sometimes(draw, 6):
        envelope = {"schema": UNSTRUCT, "data": draw(_self_describing)}
        event["ue_px" if as_base64 else "ue_pr"] = encoded(draw, envelope, as_base64, values)
    if sometimes(draw, 4):
        for name in draw(st.lists(st.sampled_from(_FIELDS), min_size=1, max_size=3)):
            event[name] = draw(values)
    if sometimes(draw, 5):
        event.update(draw(st.dictionaries(_url_text, values, max_size=3)))
    return event


@st.composite
def requests(draw: st.DrawFn, write_key: str) -> tuple[str, dict[str, Any]]:
    """`("GET", {"params": ...})` or `("POST", {"content": ..., "headers": ...})`."""
    key = write_key
    if sometimes(draw, 6):
        key = draw(st.sampled_from(["wk_0000000000000000_x", "", "my-app"]))
    headers: dict[str, str] = {}
    if sometimes(draw, 4):
        headers["Origin"] = draw(st.sampled_from(["https://shop.example", "https://evil.example"]))
    if draw(st.booleans()):
        return "GET", {"params": draw(events(key, _url_text)), "headers": headers}
    body: Any = {
        "schema": PAYLOAD_DATA,
        "data": draw(st.lists(events(key, _url_text | _json), min_size=1, max_size=12)),
    }
    if sometimes(draw, 8):
        body = draw(_json)
    elif sometimes(draw, 6):
        body["data"].append(draw(_json))
    elif sometimes(draw, 8):
        body["schema"] = draw(_json)
    content = json.dumps(body).encode()
    if sometimes(draw, 8):
        content = (
            draw(st.binary(max_size=64)) if draw(st.booleans()) else content[: len(content) // 2]
        )
    if sometimes(draw, 4):
        headers["Content-Encoding"] = "gzip"
        if not sometimes(draw, 4):
            content = gzip.compress(content)
    return "POST", {"content": content, "headers": headers}


@settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_no_random_snowplow_request_makes_the_collector_fail(
    fuzzed: Fuzzed, data: st.DataObject
) -> None:
    method, arguments = data.draw(requests(fuzzed.write_key))
    path = "/i" if method == "GET" else TP2
    answer = await fuzzed.app.client.request(method, path, **arguments)
    fuzzed.statuses[answer.status_code] = fuzzed.statuses.get(answer.status_code, 0) + 1
    assert answer.status_code < 500, answer.text
    if answer.status_code == 200:
        if method == "GET":
            assert answer.content == PIXEL
        else:
            assert answer.json()["accepted"] + answer.json()["dropped"] >= 1
    else:
        assert 400 <= answer.status_code < 500
        body = answer.json()
        assert isinstance(body["error"], str)
        assert body["message"]

"""`segment_reader` stores what the general way stores: for random batches, sources and
requests, the events it hands to ingest are byte for byte those of `messages_of`, `check`,
`refine` and `tracked` (the body compact JSON), the same messages are dropped and refused with
the same answers, and the messages it leaves to the general way are those it should."""

from __future__ import annotations

import base64
import copy
import functools
import importlib.util
import json
import os
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest
import structlog
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from tests.conftest import RunningApp, app_running
from tests.tracking.support import bus_events, make_source
from tests.tracking.test_segment_fuzz import requests as fuzz_requests

from stellwerk.api import ApiError
from stellwerk.config import load_settings
from stellwerk.events import is_rfc3339
from stellwerk.ingest import DecodedEvent
from stellwerk.ops import Metrics
from stellwerk.refs import TenantId, TenantName, TenantRef
from stellwerk.service import IngestResult, ServiceError
from stellwerk.tracking import (
    CAPABILITY,
    Arrival,
    Binding,
    Collector,
    TrackingOpened,
    segment_kept,
    segment_reader,
    segment_times,
)
from stellwerk.tracking.bodies import json_of
from stellwerk.tracking.collector import DROPPED, Collected, Ready
from stellwerk.tracking.enrich import Enricher
from stellwerk.tracking.metrics import TrackingMetrics
from stellwerk.tracking.refine import Refiner, epoch
from stellwerk.tracking.segment import SEGMENT, messages_of

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
)
TENANT = TenantRef(TenantId("t-1"), TenantName("acme"))


class Taken:
    """Ingest's seam as the collector calls it: the events of each call, all accepted."""

    def __init__(self) -> None:
        self.calls: list[list[DecodedEvent]] = []

    async def take_encoded(
        self, tenant: TenantRef, name: str, events: list[DecodedEvent]
    ) -> IngestResult:
        self.calls.append(events)
        return IngestResult(accepted=len(events), failed=[])


@functools.cache
def refiner() -> Refiner:
    """One for the module, as one per process: its user agent parser takes ~0.15 s to build."""
    return Refiner(Enricher(), b"k" * 32)


def binding(**settings: Any) -> Binding:
    fields: dict[str, Any] = {
        "tenant": TENANT,
        "name": "shop",
        "kind": "segment",
        "bus": "default",
        "key_digest": "d",
        "allowed_origins": frozenset(),
        "without_consent": "anonymous",
        "full_ip": False,
        "pseudonymise": (),
    }
    return Binding(**{**fields, **settings})


def _metrics() -> TrackingMetrics:
    return TrackingMetrics(Metrics(process=False))


async def general(
    content: bytes, kind: str | None, arrival: Arrival, source: Binding
) -> tuple[Collected | str, list[list[DecodedEvent]]]:
    """What the collector stores of a body the general way (decoded whole)."""
    taken = Taken()
    refine = refiner().stored
    # Another callable than the refiner's own: the collector offers no reader then.
    collector = Collector(taken, _metrics(), lambda m, a, b: refine(m, a, b), quick=refiner())  # type: ignore[arg-type]
    assert collector.quick() is None
    try:
        # As the route reads it: a body that is no JSON (or a number out of range) is a 400.
        messages = messages_of(json_of(content), kind, max_batch=50)
        return await collector.collect(source, arrival, messages, SEGMENT), taken.calls
    except (ServiceError, ApiError) as exc:
        return f"{type(exc).__name__}: {exc}", taken.calls


async def read(
    content: bytes, kind: str | None, arrival: Arrival, source: Binding
) -> tuple[Collected | str, list[list[DecodedEvent]], list[Any]]:
    """What the collector stores of a body through `segment_reader`, and the items it read."""
    taken = Taken()
    collector = Collector(taken, _metrics(), refiner().stored, quick=refiner())  # type: ignore[arg-type]
    assert collector.quick() is refiner()
    body = segment_reader.read(content, kind)
    if body is None:  # the route decodes it whole then (not JSON, or odd shared members)
        general_answer, events = await general(content, kind, arrival, source)
        return general_answer, events, []
    try:
        items = body.messages(refiner(), arrival, source, max_batch=50)
    except (ServiceError, ApiError) as exc:
        return f"{type(exc).__name__}: {exc}", taken.calls, []
    # As read: refine changes the general way's messages in place.
    snapshot = [copy.deepcopy(item) if isinstance(item, dict) else item for item in items]
    return await collector.collect(source, arrival, items, SEGMENT), taken.calls, snapshot


def _comparable(events: list[list[DecodedEvent]], made_up: set[str]) -> list[tuple[Any, ...]]:
    """The events as stored; an id the collector made up (no messageId) is left out of both
    the event and its encoding, being random."""
    found: list[tuple[Any, ...]] = []
    for call in events:
        for event in call:
            if event.id in made_up:
                data = msgspec.json.decode(event.encoded)
                del data["id"]
                found.append((event.index, "made up", event.type, event.subject, data))
            else:
                found.append((event.index, event.id, event.type, event.subject, event.encoded))
    return found


def _made_up(events: list[list[DecodedEvent]], content: bytes) -> set[str]:
    return {e.id for call in events for e in call if e.id.encode() not in content}


async def same(
    content: bytes, kind: str | None, arrival: Arrival, source: Binding, *, bytewise: bool = True
) -> list[Any]:
    """Assert the reader stores what the general way stores; the reader's items."""
    got, got_events, items = await read(content, kind, arrival, source)
    want, want_events = await general(content, kind, arrival, source)
    if isinstance(want, str) or isinstance(got, str):
        assert got == want
        return items
    assert (got.accepted, got.dropped, got.failed) == (want.accepted, want.dropped, want.failed)
    got_found = _comparable(got_events, _made_up(got_events, content))
    want_found = _comparable(want_events, _made_up(want_events, content))
    if bytewise:
        assert got_found == want_found
    else:
        assert [(*g[:4], _json(g[4])) for g in got_found] == [
            (*w[:4], _json(w[4])) for w in want_found
        ]
    return items


def _json(value: Any) -> Any:
    return msgspec.json.decode(value) if isinstance(value, bytes) else value


# Messages: mostly what SDKs send (so the reader takes them), with what leaves them to the
# general way now and then: numbers as ids, a consent that is no list, forged members, an
# anonymous visitor, wrong types.
_text = st.text(max_size=12)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text
)
_json_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)
_ips = st.sampled_from(["81.2.69.160", "2a02:8100::1", "", "nonsense", "::ffff:81.2.69.1"])
_agents = st.sampled_from([CHROME, "", "python-requests/2.31", "Googlebot/2.1"])
_urls = st.sampled_from(
    ["https://shop.example/p?utm_source=news&utm_medium=email", "https://shop.example/", ""]
)
_referrers = st.sampled_from(["https://www.google.com/", "https://shop.example/a", ""])
_purposes = st.lists(
    st.sampled_from(["analytics", "advertising", "Analytics", "x.y"]), min_size=1, max_size=3
)
_times = st.sampled_from(
    [
        "2026-12-04T10:00:00.000Z",
        "2026-12-29T23:59:59.999+01:00",
        "2026-02-30T10:00:00Z",
        "2026-12-04T10:00:60Z",
        "2026-12-04t10:00:00z",
        "2026-12-04",
        "1969-12-31T23:59:59.5Z",
        "1970-01-01T00:30:00+01:00",
        "2026-12-04T10:00:00.1234567Z",
        "2026-12-04T10:00:00.123456-09:30",
        "2026-12-04 10:00:00Z",
        "yesterday",
    ]
)


# Without the explain phase, whose replay fails inside hypothesis on these strategies and
# hides the failure it found.
_PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink)


def sometimes(draw: st.DrawFn, one_in: int) -> bool:
    return draw(st.integers(1, one_in)) == one_in


@st.composite
def contexts(draw: st.DrawFn) -> dict[str, Any]:
    context: dict[str, Any] = {}
    if draw(st.booleans()):
        context["ip"] = draw(_ips)
    if draw(st.booleans()):
        context["userAgent"] = draw(_agents)
    if draw(st.booleans()):
        context["page"] = {"url": draw(_urls), "referrer": draw(_referrers)}
    if not sometimes(draw, 5):
        context["consent"] = {"purposes": draw(_purposes)}
    if draw(st.booleans()):
        context["traits"] = {"email": draw(st.sampled_from([" A@B.example ", "", 7]))}
    if draw(st.booleans()):
        context["library"] = {"name": "analytics-python", "version": "2.3.2"}
    if sometimes(draw, 6):
        odd = draw(st.sampled_from(["consent", "traits", "page", "ip", "stellwerk", "device"]))
        context[odd] = draw(_json_values)
    if sometimes(draw, 10):
        context["stellwerk.consent.purposes.advertising"] = True
    return context


def either(draw: st.DrawFn, common: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> Any:
    """Mostly `common`, now and then `odd`."""
    return draw(odd) if sometimes(draw, 8) else draw(common)


@st.composite
def messages(draw: st.DrawFn, single: bool = False) -> dict[str, Any]:
    kind = draw(st.sampled_from(["track", "identify", "page", "screen", "group", "alias"]))
    message: dict[str, Any] = {} if single else {"type": kind}
    if draw(st.booleans()):
        message["userId"] = either(draw, st.sampled_from(["u-1", "u-2"]), st.sampled_from(["", 7]))
    if draw(st.booleans()) or "userId" not in message:
        message["anonymousId"] = either(draw, st.sampled_from(["a-1", "a-2"]), st.just(""))
    if not sometimes(draw, 6):
        odd_ids = st.sampled_from(["", "x" * 300, 5])
        message["messageId"] = either(draw, st.uuids().map(str), odd_ids)
    if kind == "track" or sometimes(draw, 4):
        message["event"] = either(draw, st.just("Order Completed"), st.just(""))
    if kind == "group" or sometimes(draw, 4):
        message["groupId"] = either(draw, st.just("g-1"), st.sampled_from(["", 3]))
    if kind == "alias" or sometimes(draw, 4):
        message["previousId"] = either(draw, st.just("p-1"), st.just(""))
    for name in ("properties", "traits", "integrations"):
        if draw(st.booleans()):
            value: Any = draw(st.dictionaries(_text, _json_values, max_size=3))
            if name == "traits" and draw(st.booleans()):
                value["email"] = draw(st.sampled_from(["Someone@Shop.example", "x"]))
            message[name] = value
    if not sometimes(draw, 4):
        message["context"] = draw(contexts())
    if not sometimes(draw, 4):
        message["timestamp"] = draw(_times)
    if sometimes(draw, 4):
        message["sentAt"] = draw(_times)
    if sometimes(draw, 5):
        message["ip"] = draw(_ips)
    if sometimes(draw, 5):
        message["writeKey"] = "wk"
    if sometimes(draw, 5):
        message.update(draw(st.dictionaries(_text, _json_values, max_size=2)))
    if sometimes(draw, 8):
        message["context.stellwerk.consent"] = {"purposes": {"advertising": True}}
    if sometimes(draw, 8):
        name = draw(st.sampled_from(["type", "userId", "context", "properties", "timestamp"]))
        message[name] = draw(_json_values)
    return message


@st.composite
def batches(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {"batch": draw(st.lists(messages(), max_size=8))}
    if sometimes(draw, 8):
        body["batch"].append(draw(_json_values))
    if sometimes(draw, 3):
        body["context"] = draw(contexts())
    if sometimes(draw, 4):
        body["integrations"] = draw(st.dictionaries(_text, st.booleans(), max_size=2))
    if draw(st.booleans()):
        body["sentAt"] = "2026-12-04T10:00:01.000Z"
    if sometimes(draw, 10):
        body[draw(st.sampled_from(["context", "integrations", "sentAt"]))] = draw(_json_values)
    if sometimes(draw, 5):
        body["writeKey"] = "wk"
    return body


_pseudonymised = st.lists(
    st.sampled_from(
        [
            "userId",
            "anonymousId",
            "traits.email",
            "context.traits.email",
            "properties.email",
            "properties",
            "integrations.x",
            "messageId",
            "context.ip",
            "event",
            "unknown.deep.path",
        ]
    ),
    max_size=3,
    unique=True,
)
_sources = st.builds(
    binding,
    without_consent=st.sampled_from(["drop", "anonymous"]),
    consent_purposes=st.sampled_from([(), (), ("analytics",), ("analytics", "advertising")]),
    full_ip=st.booleans(),
    pseudonymise=_pseudonymised.map(tuple),
    internal_hosts=st.sampled_from([(), ("shop.example",)]),
)
_arrivals = st.builds(
    Arrival,
    received_at=st.just("2026-12-05T08:00:00Z"),
    ip=st.sampled_from(["192.0.2.7", None]),
    user_agent=st.sampled_from([CHROME, None, "curl/8"]),
    referrer=st.sampled_from([None, "https://t.co/x"]),
    origin=st.sampled_from([None, "https://shop.example"]),
    headers=st.sampled_from([{}, {"user-agent": "curl/8"}, {"cookie": "a=b"}]),
)


@settings(
    max_examples=300,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
)
@given(body=batches(), source=_sources, arrival=_arrivals)
async def test_a_batch_is_stored_as_the_general_way_stores_it(
    body: dict[str, Any], source: Binding, arrival: Arrival
) -> None:
    content = msgspec.json.encode(body)
    await same(content, None, arrival, source)


@settings(max_examples=150, deadline=None, phases=_PHASES)
@given(
    message=messages(single=True),
    kind=st.sampled_from(["track", "identify", "page", "screen", "group", "alias"]),
    source=_sources,
    arrival=_arrivals,
)
async def test_a_single_call_is_stored_as_the_general_way_stores_it(
    message: dict[str, Any], kind: str, source: Binding, arrival: Arrival
) -> None:
    content = msgspec.json.encode(message)
    await same(content, kind, arrival, source)


@settings(max_examples=100, deadline=None, phases=_PHASES)
@given(body=batches(), source=_sources, arrival=_arrivals)
async def test_a_body_with_whitespace_and_escapes_is_stored_equal_as_json(
    body: dict[str, Any], source: Binding, arrival: Arrival
) -> None:
    """As Python's `json` writes a body (the SDKs): spaces after separators, non-ASCII as
    `\\u` escapes; a line break, as a pretty printer writes one."""
    for content in (json.dumps(body).encode(), json.dumps(body, indent=1).encode()):
        await same(content, None, arrival, source, bytewise=False)
        # Stored events stay on one line, as the event log needs them.
        _, events, _ = await read(content, None, arrival, source)
        assert all(b"\n" not in e.encoded for call in events for e in call)


def shop_message(n: int) -> dict[str, Any]:
    """A `track` call as a shop's backend relays it (the benchmark's)."""
    return {
        "type": "track",
        "messageId": str(uuid.UUID(int=n)),
        "userId": f"user-{n % 7}",
        "anonymousId": f"anon-{n % 5}",
        "event": "Product Viewed",
        "properties": {"product_id": f"p-{n}", "price": 19.99, "currency": "EUR", "name": "Bär"},
        "context": {
            "ip": f"81.2.69.{n % 3}",
            "userAgent": CHROME,
            "page": {"url": "https://shop.example/p/1?utm_source=news", "referrer": ""},
            "consent": {"purposes": ["analytics", "advertising"]},
            "traits": {"email": f"Person{n % 4}@Shop.example"},
        },
        "timestamp": "2026-12-04T10:00:00.000Z",
    }


@pytest.mark.parametrize(
    "settings",
    [
        {"pseudonymise": ("userId", "context.traits.email", "properties.name")},
        {"full_ip": True},
        {"consent_purposes": ("personalisation",), "without_consent": "drop"},
        {"consent_purposes": ("personalisation",), "without_consent": "anonymous"},
    ],
)
async def test_a_shops_messages_are_read_not_left_to_the_general_way(
    settings: dict[str, Any],
) -> None:
    """Not hollow: the common shape is what the reader takes itself (or drops); only an
    anonymous one is left to the general way."""
    source = binding(**settings)
    arrival = Arrival(received_at="2026-12-05T08:00:00Z", ip="192.0.2.7", headers={})
    body = {"batch": [shop_message(n) for n in range(12)], "sentAt": "2026-12-04T10:00:01Z"}
    content = msgspec.json.encode(body)
    for _ in range(2):  # a visit's first event, then its next ones
        items = await same(content, None, arrival, source)
    if settings.get("without_consent") == "drop":
        assert all(item is DROPPED for item in items)
    elif settings.get("without_consent") == "anonymous":
        assert all(isinstance(item, dict) for item in items)
    else:
        assert all(isinstance(item, (Ready, DecodedEvent)) for item in items)


async def test_what_the_reader_leaves_is_the_message_the_general_way_reads() -> None:
    """A message of another shape is handed on as `messages_of` makes it: the batch's shared
    members in it, the write key out."""
    source = binding()
    arrival = Arrival(received_at="2026-12-05T08:00:00Z", ip="192.0.2.7", headers={})
    odd: Sequence[Any] = [
        {"type": "track", "event": "E", "userId": 7, "writeKey": "wk"},
        {"type": "track", "event": "E", "userId": "u", "context": {"consent": "all"}},
        "not a message",
    ]
    body = {"batch": list(odd), "sentAt": "2026-12-04T10:00:01Z"}
    content = msgspec.json.encode(body)
    items = await same(content, None, arrival, source)
    want = messages_of(copy.deepcopy(body), None, max_batch=50)
    assert items == want


async def test_ids_are_pseudonymised_as_the_general_way_does_when_the_kept_ones_are_cleared(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The reader keeps pseudonyms and `user_data`'s `external_id` by the id, a bounded
    number in all: clearing them when full (here every 3) changes nothing that is stored."""
    monkeypatch.setattr(segment_kept, "IDS_KEPT", 3)
    source = binding(pseudonymise=("userId", "anonymousId"))
    arrival = Arrival(received_at="2026-12-05T08:00:00Z", ip="192.0.2.7", headers={})
    batch = [{**shop_message(n), "userId": f"user-{n}"} for n in range(12)]
    content = msgspec.json.encode({"batch": batch})
    for _ in range(2):
        items = await same(content, None, arrival, source)
        assert all(isinstance(item, (Ready, DecodedEvent)) for item in items)
    kept = segment_kept.contexts_of(refiner())
    assert kept.pseudonyms_count <= 3
    assert len(kept.externals) <= 3


async def test_messages_that_repeat_the_previous_ones_context_are_stored_as_the_general_way() -> (
    None
):
    """One device's batch repeats its context from message to message: the reader takes the
    previous message's decision again then, and stores what the general way stores."""
    source = binding(pseudonymise=("userId",))
    arrival = Arrival(received_at="2026-12-05T08:00:00Z", ip="192.0.2.7", headers={})
    contexts = [0, 0, 0, 1, 1, 0, 2, 2]  # each that of `shop_message(c)`
    batch = [
        {**shop_message(c), "messageId": str(uuid.UUID(int=100 + n)), "userId": f"user-{n}"}
        for n, c in enumerate(contexts)
    ]
    content = msgspec.json.encode({"batch": batch})
    for _ in range(2):  # the contexts worked out, then kept
        items = await same(content, None, arrival, source)
        assert all(isinstance(item, (Ready, DecodedEvent)) for item in items)


def test_a_time_is_read_as_refine_reads_it_whichever_halves_were_seen_before() -> None:
    """`_times` keeps the common form's halves (the second, the fraction and zone) once seen:
    a text made of a kept first half and a kept rest is read as the general way reads it,
    and a half of a text that is no RFC 3339 time is never kept."""
    heads = ["2026-12-04T10:00:00", "1971-01-01T00:00:00", "2026-02-30T10:00:00", "2026-12-04t1"]
    tails = ["Z", ".5Z", ".123456-09:30", "+23:59", ".1234567Z", "z", "+24:00", "", ":00Z"]
    # Rests too long to be kept: microseconds, read as a fraction and a kept zone.
    tails += [".123456+23:59", ".123456Z", ".654321-09:30", ".12345+00:00", ".123456+24:00"]
    tails += [".1234567+23:59", ".12345a+23:59", ".\u0661\u0662\u0663\u0664\u0665\u0666+23:59"]
    tails += ["x123456+23:59"]
    tails += [".123456+23:5", ".123456ZZ", ".123456+2359", ".1234567890Z"]
    texts = [head + tail for head in heads for tail in tails]
    for text in [*texts, *reversed(texts), *texts]:
        want = (text if is_rfc3339(text) else None), epoch(text, "2026-12-05T08:00:00Z")
        assert segment_times.times(text, "2026-12-05T08:00:00Z") == want, text
    assert segment_times.times(None, "2026-12-05T08:00:00Z") == (None, 1796457600)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[RunningApp, str, list[int]]]:
    """The whole app, the write key of a source that pseudonymises `userId`, and the statuses
    answered (not hollow: both 200s and 4xx came back). Hypothesis's examples are not drawn
    independently (it mutates what it drew before), so the share of 200s moves a lot between
    runs: 11 to 33 of 60 in six runs, and 5 twice. Hence 120 examples and a floor well below
    the least seen (the fuzz test's 120 gave 33 to 53)."""
    settings = load_settings(
        {"data_dir": str(tmp_path / "data"), "tenant_request_rate": 0, "max_batch_events": 20}
    )
    statuses: list[int] = []
    async with app_running(settings) as running:
        key = await make_source(running.client, running.admin, pseudonymise=["userId"])
        yield running, key, statuses
    assert statuses.count(200) >= 10, statuses
    assert sum(1 for s in statuses if 400 <= s < 500) >= 10, statuses


@hsettings(
    max_examples=120,
    deadline=None,
    database=None,
    phases=_PHASES,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_every_request_is_answered_as_the_general_way_answers_it(
    served: tuple[RunningApp, str, list[int]], data: st.DataObject
) -> None:
    """Through the whole app, the fuzz test's random requests (bad JSON, bad gzip, no object,
    no batch, wrong keys, too many messages, random messages): the reader's answer is the one
    the collector gives with every message decoded whole."""
    app, key, statuses = served
    opened = app.services.capabilities[CAPABILITY.name]
    assert isinstance(opened, TrackingOpened)
    path, content, headers = data.draw(fuzz_requests(key))
    refine = opened.collector.refine
    answers = []
    for general_way in (False, True):
        # The same request twice: a message of the first is a duplicate in the second, which
        # is answered as accepted all the same.
        if general_way:
            opened.collector.refine = lambda m, a, b: refine(m, a, b)
        try:
            answer = await app.client.post(path, content=content, headers=headers)
        finally:
            opened.collector.refine = refine
        answers.append((answer.status_code, answer.content))
    assert answers[0] == answers[1]
    assert answers[0][0] < 500
    statuses.append(answers[0][0])


@pytest.mark.parametrize(
    "content",
    [
        # A message left to the general way, whose decoding of the whole body failed (a 500).
        b'{"batch":[{"type":"track","event":"E","userId":7,"properties":{"a":1e400}}]}',
        b'{"batch":[{"type":"track","event":"E","userId":"u","\xff":1}]}',
        # Messages the reader took, kept raw, and stored where the general way refuses.
        b'{"batch":[{"type":"track","event":"E","userId":"u","properties":{"a":1e400}}]}',
        b'{"batch":[{"type":"track","event":"E","userId":"u","properties":{"a":"\xff"}}]}',
    ],
)
async def test_a_body_the_general_way_cannot_decode_is_refused_not_stored(
    tmp_path: Path, content: bytes
) -> None:
    """A number out of a float's range or invalid UTF-8 in a member kept raw: answered 400
    as the general way answers it, and nothing stored (an event that does not decode would
    fail every reader of the bus)."""
    settings = load_settings({"data_dir": str(tmp_path / "data")})
    async with app_running(settings) as app:
        key = await make_source(app.client, app.admin)
        basic = base64.b64encode(f"{key}:".encode()).decode()
        answer = await app.client.post(
            "/v1/batch", content=content, headers={"Authorization": f"Basic {basic}"}
        )
        assert answer.status_code == 400, answer.text
        assert answer.json()["code"] == "InvalidJson"
        assert await bus_events(app) == []


def test_the_c_reader_is_built_and_taken() -> None:
    """`pip install` builds the C reader (`setup.py`), and the reader takes it unless told
    not to: without this, a build that lost the extension would pass every other test on the
    Python reader alone (`test_segment_native.py` skips)."""
    assert importlib.util.find_spec("stellwerk.tracking._segment_native") is not None
    if os.environ.get("STELLWERK_SEGMENT_NATIVE") != "0":
        assert segment_reader.native is not None


async def test_the_start_says_when_batches_are_read_in_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The extension is optional at install (`setup.py`: no C compiler, no failed install), so
    a server reading batches in Python alone says so once at its start, with the reason; one
    with the C reader says nothing of it."""
    for native, said in ((segment_reader.native, False), (None, True)):
        monkeypatch.setattr(segment_reader, "native", native)
        settings = load_settings({"data_dir": str(tmp_path / f"data-{said}")})
        with structlog.testing.capture_logs() as lines:
            async with app_running(settings):
                pass
        told = [line for line in lines if line["event"].startswith("Segment batches are read")]
        if said:
            assert [line["reason"] for line in told] == ["STELLWERK_SEGMENT_NATIVE=0"]
        else:
            assert told == []


@pytest.mark.parametrize(
    "name",
    [
        "stellwerk.consent.purposes.advertising",
        "st\\u0065llwerk.consent.purposes.advertising",  # the word only after the escape
        "stellwerk\\u002econsent.purposes.advertising",
        "st\\u0065llwerk",  # the member the collector sets
    ],
)
async def test_a_context_member_forged_with_escapes_is_removed_as_the_general_way_removes_it(
    name: str,
) -> None:
    """A context's member named into `context.stellwerk` is found whether its name is spelt
    plainly or with escapes (the reader looks for the word in the bytes first)."""
    message = shop_message(1)
    raw = msgspec.json.encode(message["context"])
    forged = raw[:-1] + b',"' + name.encode() + b'":true}'
    content = msgspec.json.encode({"batch": [message]}).replace(raw, forged)
    assert forged in content
    arrival = Arrival(received_at="2026-12-05T08:00:00Z", ip="192.0.2.7")
    for source in (binding(), binding(consent_purposes=("advertising",))):
        await same(content, None, arrival, source)
        _, events, _ = await read(content, None, arrival, source)
        stored = msgspec.json.decode(events[0][0].encoded)["data"]["context"]
        assert set(stored) == {"ip", "userAgent", "page", "consent", "traits", "stellwerk"}


async def test_kept_contexts_are_bounded_by_their_bytes_and_stored_the_same_when_cleared(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Contexts are kept by their bytes and their stored parts' as well as by number: past
    `CONTEXTS_BYTES` they start again empty, and what is stored stays the general way's."""
    monkeypatch.setattr(segment_kept, "CONTEXTS_BYTES", 4_000)
    source = binding(pseudonymise=("userId",))
    arrival = Arrival(received_at="2026-12-05T08:00:00Z", ip="192.0.2.7", headers={})
    batch = []
    for n in range(12):
        message = shop_message(n)
        message["context"]["ip"] = f"81.2.70.{n}"
        batch.append(message)
    content = msgspec.json.encode({"batch": batch})
    kept = segment_kept.contexts_of(refiner())
    for _ in range(2):
        items = await same(content, None, arrival, source)
        assert all(isinstance(item, (Ready, DecodedEvent)) for item in items)
        assert 0 < kept.bytes <= 4_000
        assert kept.count < len(batch)

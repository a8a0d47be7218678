"""The CloudEvents HTTP binding decoder, checked against the real `cloudevents` SDK."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.v1.event import CloudEvent as SdkEvent
from cloudevents.v1 import conversion as ce_conversion
from cloudevents.v1.http import CloudEvent as SdkEventV1
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from starlette.datastructures import Headers

from stellwerk.events import (
    EventError,
    EventErrorCode,
    encode_event,
    parse_rfc3339,
    validate_event,
)
from stellwerk.ingest.binding import (
    BATCH_CONTENT_TYPE,
    STRUCTURED_CONTENT_TYPE,
    BindingError,
    BindingErrorCode,
    BindingLimits,
    DecodedEvent,
    DecodeResult,
    EventFailure,
    decode_request,
    percent_decode,
)
from stellwerk.refs import BusRef, TenantName
from stellwerk.seams import NewEvent
from stellwerk.storage.eventlog.sqlite import SqliteEventLog
from stellwerk.storage.sqlite import LOG_DIR

TIME = datetime(2026, 3, 1, 12, 30, 15, 250000, tzinfo=UTC)


def sdk_attributes(**extra: Any) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "id": "evt-1",
        "source": "https://shop.example/orders",
        "type": "com.example.order.created",
        "specversion": "1.0",
        "time": TIME,
        "subject": "order/7",
    }
    attributes.update(extra)
    return attributes


def only_event(results: list[DecodeResult]) -> DecodedEvent:
    assert len(results) == 1
    (result,) = results
    assert isinstance(result, DecodedEvent), result
    return result


def only_failure(results: list[DecodeResult]) -> EventFailure:
    assert len(results) == 1
    (result,) = results
    assert isinstance(result, EventFailure), result
    return result


def assert_same_attributes(decoded: DecodedEvent, sdk_attrs: dict[str, Any]) -> None:
    event = decoded.event
    assert (event.id, event.source, event.type, event.specversion) == (
        sdk_attrs["id"],
        sdk_attrs["source"],
        sdk_attrs["type"],
        sdk_attrs["specversion"],
    )
    assert event.subject == sdk_attrs.get("subject")
    assert event.time is not None
    expected_time = sdk_attrs["time"]
    if isinstance(expected_time, str):
        expected_time = parse_rfc3339(expected_time)
    assert parse_rfc3339(event.time) == expected_time
    known = {"id", "source", "type", "specversion", "time", "subject", "datacontenttype"}
    assert event.extensions == {k: v for k, v in sdk_attrs.items() if k not in known}


@pytest.mark.parametrize("extension", ["plain", 'with space, % and "quotes" and ümlauts'])
def test_sdk_binary_mode_with_percent_encoded_headers(extension: str) -> None:
    attrs = sdk_attributes(comexampletrace=extension)
    message = ce_http.to_binary_event(SdkEvent(dict(attrs), {"total": 120, "items": ["a"]}))

    decoded = only_event(
        decode_request(message.headers.get("content-type"), message.headers, message.body)
    )

    assert_same_attributes(decoded, attrs)
    assert decoded.event.data == {"total": 120, "items": ["a"]}


def test_sdk_structured_mode() -> None:
    attrs = sdk_attributes(datacontenttype="application/json", region="eu1")
    message = ce_http.to_structured_event(SdkEvent(dict(attrs), {"total": 120}))

    decoded = only_event(decode_request(message.headers["content-type"], {}, message.body))

    assert_same_attributes(decoded, attrs)
    assert decoded.event.datacontenttype == "application/json"
    assert decoded.event.data == {"total": 120}


def test_sdk_v1_structured_and_binary_with_bytes_data() -> None:
    attrs = sdk_attributes(datacontenttype="application/octet-stream", time=TIME.isoformat())
    payload = b"\x00\x01binary\xff"
    event = SdkEventV1(dict(attrs), payload)
    headers, body = ce_conversion.to_structured(event)
    structured = only_event(decode_request(headers["content-type"], headers, body))
    headers, body = ce_conversion.to_binary(event)
    binary = only_event(decode_request(headers["content-type"], headers, body))

    for decoded in (structured, binary):
        assert_same_attributes(decoded, attrs)
        assert decoded.event.data_base64 is not None
        assert base64.b64decode(decoded.event.data_base64) == payload


def test_batch_mode_of_sdk_events_keeps_order() -> None:
    events = [
        json.loads(ce_http.to_structured_event(SdkEvent(sdk_attributes(id=f"e{i}"), {"i": i})).body)
        for i in range(3)
    ]
    results = decode_request(BATCH_CONTENT_TYPE, {}, json.dumps(events).encode())

    assert [r.index for r in results] == [0, 1, 2]
    assert [r.event.id for r in results if isinstance(r, DecodedEvent)] == ["e0", "e1", "e2"]


def test_plain_json_takes_an_object_or_an_array() -> None:
    event = {"specversion": "1.0", "id": "a", "source": "/s", "type": "t"}
    one = decode_request("application/json; charset=utf-8", {}, msgspec.json.encode(event))
    many = decode_request("Application/JSON", {}, msgspec.json.encode([event, event]))

    assert only_event(one).event.id == "a"
    assert len(many) == 2


def test_a_batch_partly_fails_per_index() -> None:
    good = {"specversion": "1.0", "id": "ok", "source": "/s", "type": "t"}
    batch = [
        good,
        {**good, "id": "late", "time": "yesterday"},
        {**good, "id": None},
        "not an event",
        {**good, "id": "big", "data": "x" * 2000},
    ]
    limits = BindingLimits(max_event_size=1000)

    results = decode_request(BATCH_CONTENT_TYPE, {}, msgspec.json.encode(batch), limits)

    assert isinstance(results[0], DecodedEvent)
    failures = [r for r in results if isinstance(r, EventFailure)]
    assert [(f.index, f.id, f.code, f.attribute) for f in failures] == [
        (1, "late", EventErrorCode.INVALID_ATTRIBUTE, "time"),
        (2, None, EventErrorCode.MISSING_ATTRIBUTE, "id"),
        (3, None, EventErrorCode.NOT_AN_OBJECT, None),
        (4, "big", EventErrorCode.EVENT_TOO_LARGE, None),
    ]


def test_encoded_event_is_what_was_sent_minus_stellwerk_extensions() -> None:
    sent = {
        "specversion": "1.0",
        "id": "a",
        "source": "/s",
        "type": "t",
        "tenant": "someone-else",
        "ext": 1,
        "data": {"k": [1.5, None, True]},
    }
    decoded = only_event(decode_request(STRUCTURED_CONTENT_TYPE, {}, msgspec.json.encode(sent)))

    del sent["tenant"]
    assert msgspec.json.decode(decoded.encoded) == sent


def test_binary_mode_data_by_content_type() -> None:
    headers = {"CE-SpecVersion": "1.0", "ce-id": "b1", "ce-source": "/s", "ce-type": "t"}

    text = only_event(decode_request("text/plain", headers, b"hello"))
    assert text.event.data_base64 == base64.b64encode(b"hello").decode()
    assert text.event.datacontenttype == "text/plain"
    cloud_json = only_event(decode_request("application/vnd.x+json", headers, b"[1,2]"))
    assert cloud_json.event.data == [1, 2]
    untyped = only_event(decode_request(None, headers, b"\xff\xfe"))
    assert untyped.event.data_base64 == base64.b64encode(b"\xff\xfe").decode()
    empty = only_event(decode_request("application/json", headers, b""))
    assert empty.event.data is msgspec.UNSET
    assert empty.event.data_base64 is None

    broken = only_failure(decode_request("application/json", headers, b"{oops"))
    assert (broken.id, broken.code, broken.attribute) == ("b1", EventErrorCode.INVALID_DATA, "data")


def test_binary_mode_refuses_bad_headers_per_event() -> None:
    headers = {"ce-specversion": "1.0", "ce-id": "b1", "ce-source": "/s", "ce-type": "t"}

    bad_escape = only_failure(decode_request(None, {**headers, "ce-note": "50%"}, b""))
    assert (bad_escape.code, bad_escape.attribute) == (EventErrorCode.INVALID_ATTRIBUTE, "note")
    not_utf8 = only_failure(decode_request(None, {**headers, "ce-note": "%FF"}, b""))
    assert not_utf8.code is EventErrorCode.INVALID_ATTRIBUTE
    data_header = only_failure(decode_request(None, {**headers, "ce-data": "x"}, b""))
    assert data_header.code is EventErrorCode.INVALID_EXTENSION
    missing = only_failure(decode_request(None, {"ce-specversion": "1.0", "ce-id": "x"}, b""))
    assert (missing.code, missing.attribute) == (EventErrorCode.MISSING_ATTRIBUTE, "source")


def test_percent_decoding_follows_the_binding() -> None:
    assert percent_decode("plain") == "plain"
    assert percent_decode("%C3%BCber%20%25%22") == 'über %"'
    assert percent_decode("caf\u00c3\u00a9") == "café"  # UTF-8 bytes a server read as Latin-1
    for bad in ["%", "%4", "%zz", "%C3"]:
        with pytest.raises(ValueError, match=r"percent|utf-8|decode"):
            percent_decode(bad)


@pytest.mark.parametrize(
    ("content_type", "body", "status", "code"),
    [
        (STRUCTURED_CONTENT_TYPE, b"{not json", 400, BindingErrorCode.INVALID_JSON),
        (STRUCTURED_CONTENT_TYPE, b"[]", 400, BindingErrorCode.NOT_AN_OBJECT),
        (BATCH_CONTENT_TYPE, b"{}", 400, BindingErrorCode.NOT_AN_ARRAY),
        ("application/json", b'"event"', 400, BindingErrorCode.NOT_AN_OBJECT_OR_ARRAY),
        ("application/json", b"[" * 2000 + b"]" * 2000, 400, BindingErrorCode.INVALID_JSON),
        ("text/plain", b"{}", 415, BindingErrorCode.UNSUPPORTED_MEDIA_TYPE),
        (None, b"{}", 415, BindingErrorCode.UNSUPPORTED_MEDIA_TYPE),
        ("application/cloudevents+avro", b"{}", 415, BindingErrorCode.UNSUPPORTED_MEDIA_TYPE),
        ("application/json; charset=latin-1", b"{}", 415, BindingErrorCode.UNSUPPORTED_MEDIA_TYPE),
        ("application/json", b"[" + b"{}," * 10 + b"{}]", 413, BindingErrorCode.BATCH_TOO_LARGE),
        ("application/json", b" " * 5000 + b"{}", 413, BindingErrorCode.BODY_TOO_LARGE),
    ],
)
def test_whole_request_errors(
    content_type: str | None, body: bytes, status: int, code: BindingErrorCode
) -> None:
    limits = BindingLimits(max_batch_size=10, max_body_size=4096)
    with pytest.raises(BindingError) as caught:
        decode_request(content_type, {}, body, limits)
    assert (caught.value.status, caught.value.code) == (status, code)
    assert caught.value.message


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
_event_like = st.fixed_dictionaries(
    {},
    optional={
        "specversion": st.sampled_from(["1.0", "0.3", 1]),
        "id": st.text(max_size=5) | st.integers(),
        "source": st.text(max_size=5),
        "type": st.text(max_size=5),
        "time": st.sampled_from(["2026-01-01T00:00:00Z", "nope", ""]),
        "data": _json_values,
        "data_base64": st.text(max_size=8),
        "tenant": st.text(max_size=3),
    },
).flatmap(
    lambda d: st.dictionaries(st.text(max_size=6), _json_values, max_size=3).map(
        lambda extra: {**extra, **d}
    )
)
_content_types = st.sampled_from(
    [
        None,
        "",
        STRUCTURED_CONTENT_TYPE,
        BATCH_CONTENT_TYPE,
        "application/json",
        "application/json; charset=utf-8",
        "text/plain",
        "application/xml+json",
        ";;=",
    ]
) | st.text(max_size=20)
_headers = st.dictionaries(
    st.sampled_from(["ce-specversion", "ce-id", "ce-source", "ce-type", "ce-time", "CE-X", "ce-"])
    | st.text(max_size=8),
    st.text(max_size=12),
    max_size=6,
)
_bodies = (
    st.binary(max_size=64)
    | _json_values.map(msgspec.json.encode)
    | _event_like.map(msgspec.json.encode)
    | st.lists(_event_like, max_size=5).map(msgspec.json.encode)
)


@settings(max_examples=250, suppress_health_check=[HealthCheck.too_slow])
@given(content_type=_content_types, headers=_headers, body=_bodies)
def test_fuzzed_requests_only_raise_binding_errors(
    content_type: str | None, headers: dict[str, str], body: bytes
) -> None:
    limits = BindingLimits(max_batch_size=4, max_event_size=2048)
    try:
        results = decode_request(content_type, headers, body, limits)
    except BindingError as exc:
        status = exc.status
        assert status in (400, 413, 415)
        return
    assert [r.index for r in results] == list(range(len(results)))
    for result in results:
        if isinstance(result, DecodedEvent):
            assert len(result.encoded) <= limits.max_event_size
            decoded = msgspec.json.decode(result.encoded)
            assert isinstance(decoded, dict)
            assert decoded["id"] == result.event.id
            assert "tenant" not in decoded
        else:
            assert isinstance(result, EventFailure)
            assert result.message


def test_binary_mode_from_starlette_headers_as_a_server_hands_them_over() -> None:
    # Raw header bytes as they arrive: a producer that skipped percent-encoding sent UTF-8.
    headers = Headers(
        raw=[
            (b"content-type", b"application/json"),
            (b"ce-specversion", b"1.0"),
            (b"ce-id", b"raw-1"),
            (b"ce-source", b"/s"),
            (b"ce-type", b"t"),
            (b"ce-city", "Zürich".encode()),
            (b"ce-encoded", b"Z%C3%BCrich"),
        ]
    )

    decoded = only_event(decode_request(headers.get("content-type"), headers, b'{"a": 1}'))

    assert decoded.event.extensions == {"city": "Zürich", "encoded": "Zürich"}
    assert decoded.event.data == {"a": 1}


async def test_a_decoded_event_goes_into_the_log_as_sent(tmp_path: Path) -> None:
    sent = {"specversion": "1.0", "id": "a", "source": "/s", "type": "t", "subject": "x"}
    decoded = only_event(decode_request(STRUCTURED_CONTENT_TYPE, {}, msgspec.json.encode(sent)))

    async with SqliteEventLog(tmp_path / LOG_DIR) as log:
        await log.append(
            [NewEvent.of(TenantName("acme"), "orders", decoded.event, decoded.encoded)]
        )
        (stored,) = await log.read(BusRef(TenantName("acme"), "orders"))

    assert (stored.id, stored.source, stored.type, stored.subject) == ("a", "/s", "t", "x")
    body = msgspec.json.decode(stored.body)
    assert body == {**sent, "tenant": "acme", "bus": "orders", "recordedtime": body["recordedtime"]}


_valid_strings = st.text(min_size=1, max_size=8)
_mostly_valid = st.fixed_dictionaries(
    {
        "specversion": st.just("1.0"),
        "id": _valid_strings,
        "source": _valid_strings,
        "type": _valid_strings,
    },
    optional={
        "time": st.sampled_from(["2026-01-01T00:00:00Z", "2026-02-30T00:00:00Z", "", None]),
        "subject": _valid_strings | st.none(),
        "datacontenttype": st.just("application/json"),
        "dataschema": _valid_strings,
        "data": _json_values,
        "data_base64": st.sampled_from(["aGk=", "not base64"]),
        "partitionkey": st.text(max_size=3),
        "bus": st.text(max_size=3),
    },
)
# How producers lay out their JSON: compact, with spaces, or across lines.
_layouts = st.sampled_from(
    [
        lambda obj: msgspec.json.encode(obj),
        lambda obj: json.dumps(obj, ensure_ascii=False, allow_nan=False).encode(),
        lambda obj: json.dumps(obj, indent=1, allow_nan=False).encode(),
        lambda obj: b"  " + msgspec.json.encode(obj) + b"\r\n",
    ]
)


def _laid_out(layout: Any, obj: object) -> bytes:
    try:
        body: bytes = layout(obj)
    except ValueError:  # an infinity, which JSON cannot hold
        assume(False)
        raise
    return body


def _expected(obj: dict[str, Any]) -> DecodedEvent | tuple[EventErrorCode, str | None, str]:
    """What the slow path, validate_event and encode_event alone, makes of one event."""
    try:
        event = validate_event(obj)
    except EventError as exc:
        return (exc.code, exc.attribute, exc.message)
    return DecodedEvent.of(0, event, encode_event(event))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(_mostly_valid | _event_like, min_size=1, max_size=4), layout=_layouts)
def test_events_kept_as_sent_are_exactly_those_the_validator_accepts(
    events: list[dict[str, Any]], layout: Any
) -> None:
    """The fast path (event stored as sent) and the validator agree on every event."""
    one = _laid_out(layout, events[0])
    many = _laid_out(layout, events)
    structured = decode_request(STRUCTURED_CONTENT_TYPE, {}, one)
    batch = decode_request(BATCH_CONTENT_TYPE, {}, many)
    # The verdicts on what was sent (msgspec writes an infinity as null, say).
    sent_one, sent_many = msgspec.json.decode(one), msgspec.json.decode(many)
    for results, sent in ((structured, [sent_one]), (batch, sent_many)):
        assert len(results) == len(sent)
        for result, obj in zip(results, sent, strict=True):
            expected = _expected(obj)
            if isinstance(expected, tuple):
                assert isinstance(result, EventFailure)
                assert (result.code, result.attribute, result.message) == expected
                continue
            assert isinstance(result, DecodedEvent), result
            assert result.event == expected.event
            assert (result.id, result.source, result.type, result.subject) == (
                expected.id,
                expected.source,
                expected.type,
                expected.subject,
            )
            # The same event as JSON, whichever way it was kept, on one line, at most as long.
            assert msgspec.json.decode(result.encoded) == msgspec.json.decode(expected.encoded)
            assert b"\n" not in result.encoded
            assert b"\r" not in result.encoded
            assert result.encoded[:1] == b"{"
            assert result.encoded[-1:] == b"}"


def test_a_body_that_is_not_utf8_is_invalid_json() -> None:
    for content_type, body in (
        (STRUCTURED_CONTENT_TYPE, b'{"id": "\xff"}'),
        (BATCH_CONTENT_TYPE, b'[{"id": "\xff"}]'),
        ("application/json", b'[{"id": "ok"}, {"id": "\xfe"}]'),
    ):
        with pytest.raises(BindingError) as caught:
            decode_request(content_type, {}, body)
        assert caught.value.code is BindingErrorCode.INVALID_JSON


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(_mostly_valid, min_size=1, max_size=6))
def test_a_batch_decodes_as_its_events_do_one_by_one(events: list[dict[str, Any]]) -> None:
    """A batch whose events are all kept as sent is decoded a step at a time for all of them;
    each event comes out as it does sent alone, at its index."""
    batch = decode_request(BATCH_CONTENT_TYPE, {}, msgspec.json.encode(events))
    for index, (result, obj) in enumerate(zip(batch, events, strict=True)):
        (alone,) = decode_request(STRUCTURED_CONTENT_TYPE, {}, msgspec.json.encode(obj))
        assert result.index == index
        if isinstance(alone, EventFailure):
            assert isinstance(result, EventFailure)
            assert (result.code, result.attribute) == (alone.code, alone.attribute)
            continue
        assert isinstance(result, DecodedEvent)
        assert (result.encoded, result.id, result.source, result.type, result.subject) == (
            alone.encoded,
            alone.id,
            alone.source,
            alone.type,
            alone.subject,
        )

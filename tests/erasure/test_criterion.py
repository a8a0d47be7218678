"""Erasure criteria: what they accept, which events they match, and needles that never miss."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stellwerk.erasure.criterion import Criterion, InvalidCriterion, needle_of, parse
from stellwerk.refs import TenantName
from stellwerk.seams import StoredEvent


def _stored(event: dict[str, Any]) -> StoredEvent:
    return StoredEvent(
        TenantName("acme"),
        "default",
        1,
        event["id"],
        event["source"],
        event["type"],
        event.get("subject"),
        datetime(2026, 1, 1, tzinfo=UTC),
        json.dumps(event).encode(),
    )


def _event(**fields: Any) -> dict[str, Any]:
    return {"id": "e1", "source": "/app", "type": "signup", "specversion": "1.0", **fields}


@pytest.mark.parametrize(
    ("subject", "field", "value", "wrong", "reason"),
    [
        (None, None, None, "subject", "give subject, or field and value"),
        ("u1", "data.userId", "u1", "subject", "not both"),
        ("u1", None, "u1", "value", "value goes with field"),
        ("", None, None, "subject", "non-empty string"),
        (7, None, None, "subject", "non-empty string"),
        ("x" * 1025, None, None, "subject", "longer than 1024"),
        (None, "data.userId", None, "value", "needs a value"),
        (None, "data.userId", {"a": 1}, "value", "string, number or boolean"),
        (None, "data.userId", [1], "value", "string, number or boolean"),
        (None, "data.userId", float("nan"), "value", "string, number or boolean"),
        (None, "data..userId", "u1", "field", "empty part"),
        (None, "data.", "u1", "field", "empty part"),
        (None, "Data.userId", "u1", "field", "must start with data"),
        (None, "user-id", "u1", "field", "must start with data"),
        (None, "subject.x", "u1", "field", "has no parts"),
        (None, "tenant", "acme", "field", "Stellwerk sets itself"),
        (None, "recordedtime", "x", "field", "Stellwerk sets itself"),
        (None, "data." + ".".join("a" * 16), "u1", "field", "parts"),
        (None, 12, "u1", "field", "dotted path"),
    ],
)
def test_bad_criteria_are_refused_with_the_part_that_is_wrong(
    subject: object, field: object, value: object, wrong: str, reason: str
) -> None:
    with pytest.raises(InvalidCriterion, match=reason) as caught:
        parse(subject, field, value)
    assert caught.value.field == wrong


def test_good_criteria_are_taken() -> None:
    assert parse("u1", None, None) == Criterion(subject="u1")
    assert parse(None, "data.user.id", 42) == Criterion(field="data.user.id", value=42)
    assert parse(None, "userid", "u1").path == ("userid",)
    assert parse(None, "data", True).target is True


def test_subject_and_log_attributes_match_without_the_body() -> None:
    event = _stored(_event(subject="u1"))
    assert Criterion(subject="u1").matches_stored(event)
    assert not Criterion(subject="u2").matches_stored(event)
    assert Criterion(field="source", value="/app").matches_stored(event)
    # A body that is not even JSON: only the attributes were read.
    assert Criterion(field="id", value="e1").matches_stored(
        msgspec.structs.replace(event, body=b"?")
    )


@pytest.mark.parametrize(
    ("data", "field", "value", "expected"),
    [
        ({"userId": "u1"}, "data.userId", "u1", True),
        ({"userId": "u10"}, "data.userId", "u1", False),
        ({"user": {"id": 7}}, "data.user.id", 7, True),
        ({"user": {"id": 7.0}}, "data.user.id", 7, True),
        ({"user": {"id": "7"}}, "data.user.id", 7, False),
        ({"flag": 1}, "data.flag", True, False),
        ({"flag": True}, "data.flag", True, True),
        ({"users": [{"id": "a"}, {"id": "u1"}]}, "data.users.id", "u1", True),
        ({"tags": ["x", "u1"]}, "data.tags", "u1", True),
        ({"userId": None}, "data.userId", "u1", False),
        ("u1", "data", "u1", True),
        ("u1", "data.userId", "u1", False),
    ],
)
def test_data_paths_match_by_value(data: object, field: str, value: Any, expected: bool) -> None:
    criterion = Criterion(field=field, value=value)
    assert criterion.matches_stored(_stored(_event(data=data))) is expected


def test_extension_attributes_match_from_the_body() -> None:
    event = _stored(_event(userid="u1"))
    assert Criterion(field="userid", value="u1").matches_stored(event)
    assert not Criterion(field="userid", value="u2").matches_stored(event)


def test_escaped_values_match_after_decoding() -> None:
    body = b'{"id":"e1","source":"/a","type":"t","data":{"name":"Jos\\u00e9 M\\u00fcller"}}'
    criterion = Criterion(field="data.name", value="José Müller")
    assert criterion.matches_event(body)
    assert criterion.needle in body


def test_payloads_as_transformed_or_as_text() -> None:
    criterion = Criterion(field="data.userId", value="u1")
    event = json.dumps(_event(data={"userId": "u1"})).encode()
    assert criterion.matches_payload(event, "application/cloudevents+json")
    assert criterion.matches_payload(b'{"who":{"uid":"u1"}}', "application/json")
    assert not criterion.matches_payload(b'{"who":{"uid":"u2"}}', "application/json")
    assert criterion.matches_payload(b"signup by u1", "text/plain")
    assert not criterion.matches_payload(b"not json", "application/cloudevents+json")
    assert criterion.payload_needle in b"signup by u1"


def test_needles() -> None:
    assert needle_of("u-123") == b'"u-123"'
    assert needle_of("José") == b"Jos"
    assert needle_of("a/b") == b"a"  # '/' may be sent as '\/'
    assert needle_of("山田") == b""
    assert Criterion(subject="山田").needle == b'"'  # every event's JSON has one
    assert needle_of(42) == b"42"
    assert needle_of(42.0) == b"42"
    assert needle_of(0.5) == b""
    assert needle_of(False) == b"false"


def _encodings(value: str) -> list[bytes]:
    """How common JSON encoders write the string: as is, ASCII-escaped, '/' and HTML escaped."""
    plain = json.dumps(value, ensure_ascii=False)
    ascii_only = json.dumps(value)
    html = ascii_only.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return [
        plain.encode(),
        ascii_only.encode(),
        ascii_only.replace("/", "\\/").encode(),
        html.replace("'", "\\u0027").replace("+", "\\u002b").encode(),
        msgspec.json.encode(value),
    ]


@given(st.text(min_size=1, max_size=40))
def test_a_string_needle_is_in_every_common_encoding(value: str) -> None:
    needle = Criterion(field="data.v", value=value).needle
    for encoded in _encodings(value):
        body = b'{"id":"e1","data":{"v":' + encoded + b"}}"
        assert needle in body
        assert Criterion(field="data.v", value=value).matches_event(body)


@given(st.integers(-(10**14), 10**14))
def test_a_number_needle_is_in_its_integer_and_float_forms(value: int) -> None:
    needle = needle_of(value)
    assert needle in json.dumps(value).encode()
    assert needle in json.dumps(float(value)).encode()


@given(
    st.fixed_dictionaries(
        {"subject": st.one_of(st.none(), st.text()), "field": st.one_of(st.none(), st.text())},
        optional={"value": st.one_of(st.none(), st.text(), st.integers(), st.floats())},
    )
)
def test_parse_accepts_or_refuses_anything_without_crashing(fields: dict[str, Any]) -> None:
    criterion: Criterion | InvalidCriterion
    try:
        criterion = parse(fields["subject"], fields["field"], fields.get("value"))
    except InvalidCriterion as exc:
        criterion = exc
    if isinstance(criterion, InvalidCriterion):
        assert criterion.field in {"subject", "field", "value"}
    else:
        assert criterion.needle
        assert msgspec.json.decode(msgspec.json.encode(criterion), type=Criterion) == criterion

"""Validation of single events against CloudEvents 1.0 and Stellwerk's limits."""

from __future__ import annotations

import base64
from typing import Any

import msgspec
import pytest

from stellwerk.events import (
    MAX_EVENT_SIZE,
    CloudEvent,
    EventError,
    EventErrorCode,
    check_event_size,
    encode_event,
    validate_event,
)


def minimal(**changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": "e-1",
        "source": "/orders",
        "type": "order.created",
    }
    event.update(changes)
    return {k: v for k, v in event.items() if v is not _DROP}


_DROP = object()


def refusal(obj: object) -> EventError:
    with pytest.raises(EventError) as caught:
        validate_event(obj)
    return caught.value


def test_a_full_event_keeps_every_attribute_as_sent() -> None:
    event = validate_event(
        minimal(
            time="2026-03-01T12:00:00.123456789+01:00",
            subject="order-7",
            datacontenttype="application/json",
            dataschema="https://example.com/order.json",
            traceparent="00-abc",
            priority=3,
            urgent=True,
            data={"total": 120.5, "items": [1, 2]},
        )
    )

    assert event == CloudEvent(
        id="e-1",
        source="/orders",
        type="order.created",
        time="2026-03-01T12:00:00.123456789+01:00",
        subject="order-7",
        datacontenttype="application/json",
        dataschema="https://example.com/order.json",
        data={"total": 120.5, "items": [1, 2]},
        extensions={"traceparent": "00-abc", "priority": 3, "urgent": True},
    )


def test_encoding_round_trips_through_validation() -> None:
    obj = minimal(subject="s", comexampleext="x", data={"a": [1, None, "b"]})
    event = validate_event(obj)

    encoded = encode_event(event)

    assert encoded.startswith(b"{")
    assert encoded.endswith(b"}")
    assert msgspec.json.decode(encoded) == obj
    assert validate_event(msgspec.json.decode(encoded)) == event


@pytest.mark.parametrize("name", ["id", "source", "type", "specversion"])
def test_required_attributes_must_be_present(name: str) -> None:
    error = refusal(minimal(**{name: _DROP}))
    assert error.code is EventErrorCode.MISSING_ATTRIBUTE
    assert error.attribute == name
    assert f"'{name}'" in error.message


@pytest.mark.parametrize(
    ("name", "value"),
    [("id", ""), ("id", 7), ("source", ["/a"]), ("type", {"t": 1}), ("subject", "")],
)
def test_string_attributes_must_be_non_empty_strings(name: str, value: object) -> None:
    error = refusal(minimal(**{name: value}))
    assert (error.code, error.attribute) == (EventErrorCode.INVALID_ATTRIBUTE, name)
    assert name in error.message


@pytest.mark.parametrize("version", ["0.3", "1", 1.0, "1.0 "])
def test_only_specversion_1_0_is_taken(version: object) -> None:
    error = refusal(minimal(specversion=version))
    assert (error.code, error.attribute) == (EventErrorCode.INVALID_ATTRIBUTE, "specversion")


@pytest.mark.parametrize(
    "time",
    [
        "2026-03-01",
        "2026-03-01 12:00:00Z",
        "2026-03-01T12:00:00",
        "2026-02-30T12:00:00Z",
        "2026-03-01T25:00:00Z",
        "20260301T120000Z",
        "2026-03-01T12:00:00+2400",
    ],
)
def test_time_must_be_rfc3339(time: str) -> None:
    error = refusal(minimal(time=time))
    assert (error.code, error.attribute) == (EventErrorCode.INVALID_ATTRIBUTE, "time")
    assert time in error.message


@pytest.mark.parametrize("name", ["Upper", "with-dash", "with_underscore", "é", "a" * 65, ""])
def test_extension_names_are_lower_case_letters_and_digits(name: str) -> None:
    error = refusal(minimal(**{name: "v"}))
    assert (error.code, error.attribute) == (EventErrorCode.INVALID_EXTENSION, name)


def test_long_extension_names_are_taken_because_the_limit_is_only_a_should() -> None:
    name = "a" * 21
    assert validate_event(minimal(**{name: "v"})).extensions == {name: "v"}


@pytest.mark.parametrize("value", [1.5, {"a": 1}, [1], 2**31, -(2**31) - 1])
def test_extension_values_follow_the_cloudevents_type_system(value: object) -> None:
    error = refusal(minimal(ext=value))
    assert (error.code, error.attribute) == (EventErrorCode.INVALID_EXTENSION, "ext")


def test_nulls_count_as_absent() -> None:
    event = validate_event(minimal(subject=None, time=None, ext=None, data=None))
    assert event.subject is None
    assert event.time is None
    assert event.extensions == {}
    assert event.data is msgspec.UNSET
    assert "data" not in msgspec.json.decode(encode_event(event))


def test_stellwerk_extensions_from_a_producer_are_dropped() -> None:
    event = validate_event(
        minimal(tenant="other", bus="secret", recordedtime="2020-01-01T00:00:00Z", mine="kept")
    )
    assert event.extensions == {"mine": "kept"}


def test_data_base64_is_checked_and_exclusive_with_data() -> None:
    payload = base64.b64encode(b"\x00\xff binary").decode()
    assert validate_event(minimal(data_base64=payload)).data_base64 == payload

    both = refusal(minimal(data={"a": 1}, data_base64=payload))
    assert (both.code, both.attribute) == (EventErrorCode.INVALID_DATA, "data_base64")
    broken = refusal(minimal(data_base64="not base64!"))
    assert (broken.code, broken.attribute) == (EventErrorCode.INVALID_DATA, "data_base64")
    wrong_type = refusal(minimal(data_base64=123))
    assert wrong_type.code is EventErrorCode.INVALID_DATA


@pytest.mark.parametrize("value", [[minimal()], "event", 3, None])
def test_an_event_must_be_an_object(value: object) -> None:
    error = refusal(value)
    assert error.code is EventErrorCode.NOT_AN_OBJECT


def test_size_limit_counts_the_encoded_event() -> None:
    base = len(encode_event(validate_event(minimal(data=""))))
    at_limit = validate_event(minimal(data="x" * (MAX_EVENT_SIZE - base)))
    check_event_size(encode_event(at_limit))

    over = encode_event(validate_event(minimal(data="x" * (MAX_EVENT_SIZE - base + 1))))
    with pytest.raises(EventError) as caught:
        check_event_size(over)
    assert caught.value.code is EventErrorCode.EVENT_TOO_LARGE
    assert str(MAX_EVENT_SIZE) in caught.value.message


def test_every_problem_of_an_event_is_reported_at_once() -> None:
    error = refusal(
        {
            "id": "e-1",
            "time": "yesterday",
            "subject": "",
            "data": {"a": 1},
            "data_base64": "aGk=",
            "Bad": 1,
            "ok": [1],
        }
    )
    assert [(p.code, p.attribute) for p in error.problems] == [
        (EventErrorCode.MISSING_ATTRIBUTE, "source"),
        (EventErrorCode.MISSING_ATTRIBUTE, "specversion"),
        (EventErrorCode.MISSING_ATTRIBUTE, "type"),
        (EventErrorCode.INVALID_ATTRIBUTE, "time"),
        (EventErrorCode.INVALID_ATTRIBUTE, "subject"),
        (EventErrorCode.INVALID_DATA, "data_base64"),
        (EventErrorCode.INVALID_EXTENSION, "Bad"),
        (EventErrorCode.INVALID_EXTENSION, "ok"),
    ]
    # The first problem is the error's own, and the message names every attribute.
    assert (error.code, error.attribute) == (EventErrorCode.MISSING_ATTRIBUTE, "source")
    for problem in error.problems:
        assert problem.message in error.message


def test_one_problem_reads_as_before() -> None:
    error = refusal(minimal(type=_DROP))
    assert len(error.problems) == 1
    assert error.message == "attribute 'type' is missing"

"""The Snowplow protocol's pure part: decoding an event's JSON and the CloudEvent it becomes,
for the cases the HTTP tests cannot reach or would spell out slowly."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from stellwerk.tracking.snowplow import Refused, check, decoded, event_of

CONTEXTS = "iglu:com.snowplowanalytics.snowplow/contexts/jsonschema/1-0-1"
WEB_PAGE = {
    "schema": "iglu:com.snowplowanalytics.snowplow/web_page/jsonschema/1-0-0",
    "data": {"id": "p-1"},
}
ENVELOPE = json.dumps({"schema": CONTEXTS, "data": [WEB_PAGE]}, separators=(",", ":"))


def one(**fields: Any) -> Any:
    """A page view with `fields`, decoded: the event, or `Refused`."""
    [event] = decoded([{"e": "pv", "aid": "k", **fields}], "k")
    return event


@pytest.mark.parametrize(
    "coded",
    [
        base64.urlsafe_b64encode(ENVELOPE.encode()).decode(),  # padded
        base64.urlsafe_b64encode(ENVELOPE.encode()).decode().rstrip("="),  # not
        base64.b64encode(ENVELOPE.encode()).decode(),  # the standard alphabet
        " " + base64.b64encode(ENVELOPE.encode()).decode() + "\n",  # white space around
    ],
)
def test_base64_is_taken_in_either_alphabet_padded_or_not(coded: str) -> None:
    assert base64.b64encode(ENVELOPE.encode()).endswith(b"=")  # (there is padding to leave out)
    event = one(cx=coded)
    assert isinstance(event, dict), event
    assert event["contexts"] == [WEB_PAGE]
    assert "cx" not in event
    assert "aid" not in event


def test_text_that_cannot_be_utf8_is_invalid_json_not_a_fault() -> None:
    # A lone surrogate cannot come through HTTP (the body's JSON decoder refuses it), but the
    # decoder must not fail on it either.
    event = one(co='"\ud800"')
    assert isinstance(event, Refused)
    assert (event.problem.error, event.problem.field) == ("InvalidJson", "co")


@pytest.mark.parametrize(
    ("fields", "kind"),
    [
        ({"e": "pv"}, "snowplow.page_view"),
        (
            {"e": "ue", "ue_pr": json.dumps({"schema": CONTEXTS, "data": WEB_PAGE})},
            "snowplow.web_page",
        ),
    ],
)
def test_the_type_is_the_events_name_or_its_schemas(fields: dict[str, Any], kind: str) -> None:
    event = one(**fields)
    assert isinstance(event, dict)
    assert check(event) is None
    assert event_of(event, "/sources/web").type == kind


@pytest.mark.parametrize(
    ("fields", "time"),
    [
        ({"dtm": "0"}, "1970-01-01T00:00:00.000000Z"),
        ({"dtm": 1764842400123}, "2025-12-04T10:00:00.123000Z"),
        ({"dtm": "253402300799999"}, "9999-12-31T23:59:59.999000Z"),
        ({"dtm": "253402300800000"}, None),  # year 10000
        ({"dtm": "-1"}, None),
        ({"dtm": "1e3"}, None),
        ({"dtm": "١٢٣"}, None),  # digits, but not ASCII ones
        ({"dtm": "1", "ttm": "2"}, "1970-01-01T00:00:00.002000Z"),  # the true timestamp wins
        ({"dtm": "1", "ttm": "soon"}, "1970-01-01T00:00:00.001000Z"),
    ],
)
def test_the_time_is_the_trackers_timestamp_when_it_is_one(
    fields: dict[str, Any], time: str | None
) -> None:
    event = one(**fields)
    assert isinstance(event, dict)
    assert event_of(event, "/sources/web").time == time


@pytest.mark.parametrize(
    ("fields", "subject"),
    [
        ({"uid": "u", "duid": "d"}, "u"),
        ({"uid": "", "duid": "d"}, "d"),
        ({"tnuid": "t", "nuid": "n"}, "t"),
        ({"nuid": 7}, "7"),
        ({"uid": True}, None),
        ({}, None),
    ],
)
def test_the_subject_is_the_user_else_a_cookie_id(
    fields: dict[str, Any], subject: str | None
) -> None:
    event = one(**fields)
    assert isinstance(event, dict)
    assert event_of(event, "/sources/web").subject == subject


def test_an_event_without_eid_gets_a_random_id() -> None:
    first, second = one(), one()
    assert isinstance(first, dict)
    assert isinstance(second, dict)
    ids = {event_of(first, "/s").id, event_of(second, "/s").id}
    assert len(ids) == 2

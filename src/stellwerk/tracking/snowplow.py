"""The Snowplow tracker protocol's events (pure, no I/O): what a pixel query or a
`payload_data` body holds, each event's contexts and self-describing event decoded into JSON,
and the CloudEvent it becomes.

A tracker sends flat name-value pairs (`e`, `eid`, `aid`, `url`, ...) in which JSON travels as
text: plain (`co`, `ue_pr`) or base64 (`cx`, `ue_px`, URL-safe, padding optional). They are
decoded once, here, before the collector's `refine` sees them, so that consent, enrichment,
patterns and destinations read JSON rather than base64.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import msgspec

from stellwerk.events import CloudEvent, format_rfc3339
from stellwerk.service import InvalidRequest, PayloadTooLarge
from stellwerk.tracking.collector import Problem, Tracked, tracked

# The tracker protocol's event codes, and the name each gets in the CloudEvent type
# (`snowplow.<name>`); a self-describing event (`ue`) is named by its schema instead.
EVENT_NAMES: Final = {
    "pv": "page_view",
    "pp": "page_ping",
    "se": "struct",
    "tr": "transaction",
    "ti": "transaction_item",
}
SELF_DESCRIBING: Final = "ue"
EVENT_CODES: Final = frozenset({*EVENT_NAMES, SELF_DESCRIBING})
PAYLOAD_DATA: Final = "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-"
MAX_ID_LENGTH: Final = 256
WRITE_KEY: Final = "aid"
# Where the decoded JSON goes in the event's data, in place of the fields it was sent in.
CONTEXTS: Final = "contexts"
EVENT: Final = "self_describing_event"
_JSON_FIELDS: Final = ((CONTEXTS, "cx", "co"), (EVENT, "ue_px", "ue_pr"))
# An Iglu schema URI: iglu:<vendor>/<name>/<format>/<model>-<revision>-<addition>.
_IGLU: Final = re.compile(
    r"iglu:[A-Za-z0-9._-]{1,128}/([A-Za-z0-9_-]{1,128})/[A-Za-z0-9_-]{1,32}/\d{1,6}-\d{1,6}-\d{1,6}\Z"
)
# Timestamps are milliseconds since the epoch; those outside years 1970-9999 are no time.
_MAX_MILLIS: Final = 253_402_300_799_999
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_TIMES: Final = ("ttm", "dtm")  # the true timestamp a tracker was given, else the device's
_VALUES: Final = (str, int, float)  # a tuple: isinstance checks it faster than a union
_SUBJECTS: Final = ("uid", "duid", "tnuid", "nuid")  # the user id, else a tracker-set id
# The network user id: the collector's cookie, as Snowplow's collector sets it by default.
NETWORK_ID: Final = "nuid"
NETWORK_COOKIE: Final = "sp"
NETWORK_COOKIE_MAX_AGE: Final = 365 * 24 * 3600
ANONYMOUS_HEADER: Final = "sp-anonymous"  # a tracker in anonymous mode: no cookie, no nuid


class Refused(msgspec.Struct, frozen=True):
    """An event of a request that could not be decoded: the collector refuses it by `check`."""

    problem: Problem


def network_cookie(network_id: str, *, secure: bool) -> str:
    """The `Set-Cookie` value of the network user id, with the attributes of Snowplow's
    collector (`sp`, 365 days, HttpOnly, SameSite=None and Secure: the collector is often on
    another site than the page). Over plain HTTP a browser refuses SameSite=None without
    Secure, and Secure altogether, so there it is SameSite=Lax, for a collector on the page's
    own site (a test, a local shop)."""
    cookie = f"{NETWORK_COOKIE}={network_id}; Max-Age={NETWORK_COOKIE_MAX_AGE}; Path=/"
    if secure:
        return cookie + "; SameSite=None; Secure; HttpOnly"
    return cookie + "; SameSite=Lax; HttpOnly"


def events_of(body: Any, *, max_batch: int) -> list[Any]:
    """The events of a `payload_data` body: `{"schema": "iglu:...payload_data/...",
    "data": [{...}, ...]}`, or `InvalidRequest` / `PayloadTooLarge` for a body without them."""
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object", code="NotAnObject")
    schema = body.get("schema")
    if not isinstance(schema, str) or not schema.startswith(PAYLOAD_DATA):
        raise InvalidRequest(
            f"the body's schema must be {PAYLOAD_DATA}<n> (Snowplow's payload_data), "
            f"not {repr(schema)[:100]}",
            code="InvalidBatch",
            field="schema",
        )
    events = body.get("data")
    if not isinstance(events, list):
        raise InvalidRequest(
            "the body must hold the events in 'data', a list", code="InvalidBatch", field="data"
        )
    if len(events) > max_batch:
        raise PayloadTooLarge(
            f"the body holds {len(events)} events; the limit is {max_batch}",
            code="BatchTooLarge",
            field="data",
        )
    return events


def write_key_of(events: list[Any]) -> str | None:
    """The write key the request's events name their source with: the first one's `aid`."""
    for event in events:
        if isinstance(event, dict):
            key = event.get(WRITE_KEY)
            if isinstance(key, str) and key:
                return key
    return None


def decoded(events: list[Any], write_key: str) -> list[Any]:
    """Each event with its JSON decoded and its write key taken out (it names the source and is
    no part of the event), or `Refused` with the reason. One request is one source: an event
    that names another (or none) is refused."""
    return [_decoded(event, write_key) for event in events]


def _decoded(event: Any, write_key: str) -> dict[str, Any] | Refused:
    if not isinstance(event, dict):
        return Refused(Problem("NotAnObject", "an event must be a JSON object"))
    if event.get(WRITE_KEY) != write_key:
        return Refused(
            Problem(
                "InvalidField",
                "every event of a request must carry the same app id (aid): the source's write key",
                WRITE_KEY,
            )
        )
    problem = _checked(event)
    if problem is not None:
        return Refused(problem)
    del event[WRITE_KEY]  # the event was decoded for this request alone: changed in place
    for target, encoded, plain in _JSON_FIELDS:
        if encoded in event and plain in event:
            return Refused(
                Problem("InvalidField", f"{encoded} and {plain} are one field: send one", encoded)
            )
        value: Any
        if encoded in event:
            field, text = encoded, _unbase64(event.pop(encoded))
            if text is None:
                return Refused(
                    Problem("InvalidBase64", f"{encoded} is not base64 of UTF-8 text", encoded)
                )
        elif plain in event:
            field, text = plain, event.pop(plain)
            if not isinstance(text, str):
                return Refused(Problem("InvalidField", f"{plain} must be JSON as text", plain))
        else:
            continue
        try:
            value = msgspec.json.decode(text)
        except (msgspec.DecodeError, UnicodeEncodeError) as exc:  # a lone surrogate in text
            return Refused(Problem("InvalidJson", f"{field} is not valid JSON: {exc}", field))
        problem = (_contexts if target == CONTEXTS else _self_describing)(value, field)
        if problem is not None:
            return Refused(problem)
        event[target] = value["data"]
    return event


def _checked(event: dict[str, Any]) -> Problem | None:
    """What is wrong with an event's name-value pairs, before any JSON of it is decoded."""
    code = event.get("e")
    if code is None or code == "":  # a query's `e=`
        return Problem("MissingField", "an event needs its type, e (pv, pp, se, ue, tr, ti)", "e")
    if not isinstance(code, str) or code not in EVENT_CODES:
        return Problem(
            "UnknownType",
            f"event type e={repr(code)[:40]} is not one of {', '.join(sorted(EVENT_CODES))}",
            "e",
        )
    for name, value in event.items():
        # Trackers send text; numbers are taken too. Objects, lists and null are not values.
        if not isinstance(value, _VALUES):
            return Problem(
                "InvalidField", f"{name[:40]} must be a string, not {_kind(value)}", name[:100]
            )
    for name in (CONTEXTS, EVENT):
        if name in event:
            return Problem(
                "InvalidField", f"{name} is where decoded JSON goes, not a tracker field", name
            )
    eid = event.get("eid")
    if eid is not None and (not isinstance(eid, str) or not 0 < len(eid) <= MAX_ID_LENGTH):
        return Problem(
            "InvalidField", f"eid must be a non-empty string of at most {MAX_ID_LENGTH}", "eid"
        )
    if code == SELF_DESCRIBING and "ue_px" not in event and "ue_pr" not in event:
        return Problem("MissingField", "a self-describing event (ue) needs ue_px or ue_pr", "ue_px")
    return None


def _unbase64(value: Any) -> str | None:
    """The text of base64 in either alphabet (trackers send the URL-safe one), padded or not."""
    if not isinstance(value, str):
        return None
    text = value.strip().replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        return raw.decode()
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        return None


def _iglu_name(schema: Any) -> str | None:
    """The name part of an Iglu schema URI, or None if `schema` is not one."""
    found = _IGLU.match(schema) if isinstance(schema, str) else None
    return found.group(1) if found else None


def _self_describing_json(value: Any, field: str, what: str) -> Problem | None:
    if not isinstance(value, dict) or _iglu_name(value.get("schema")) is None:
        return Problem(
            "InvalidField",
            f"{what} must be an object with an Iglu 'schema' "
            "(iglu:vendor/name/jsonschema/1-0-0) and its 'data'",
            field,
        )
    if "data" not in value:
        return Problem("InvalidField", f"{what} has no 'data'", field)
    return None


def _contexts(envelope: Any, field: str) -> Problem | None:
    """What is wrong with a contexts envelope: `{"schema", "data": [{"schema", "data"}, ...]}`."""
    problem = _self_describing_json(envelope, field, f"{field} (the contexts envelope)")
    if problem is not None:
        return problem
    if not isinstance(envelope["data"], list):
        return Problem("InvalidField", f"{field}'s data must be a list of contexts", field)
    for n, context in enumerate(envelope["data"]):
        problem = _self_describing_json(context, field, f"{field}'s context {n}")
        if problem is not None:
            return problem
    return None


def _self_describing(envelope: Any, field: str) -> Problem | None:
    """What is wrong with a self-describing event's envelope: `{"schema", "data": {"schema",
    "data"}}`."""
    problem = _self_describing_json(envelope, field, f"{field} (the unstruct_event envelope)")
    if problem is not None:
        return problem
    return _self_describing_json(envelope["data"], field, f"{field}'s event")


def check(message: Any) -> Problem | None:
    """The problem of an event `decoded` refused, or None: the rest was checked decoding it."""
    return message.problem if isinstance(message, Refused) else None


def event_type(message: dict[str, Any]) -> str:
    """`snowplow.<name>`: the event code's name, or a self-describing event's schema name
    (`snowplow.add_to_cart`), as Snowplow's enriched events name them (`event_name`)."""
    code = message["e"]
    if code == SELF_DESCRIBING:
        return f"snowplow.{_iglu_name(message[EVENT]['schema'])}"
    return f"snowplow.{EVENT_NAMES[code]}"


def _time(message: dict[str, Any]) -> str | None:
    for name in _TIMES:
        value = message.get(name)
        if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 15:
            millis = int(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            millis = value
        else:
            continue
        if 0 <= millis <= _MAX_MILLIS:
            return format_rfc3339(_EPOCH + timedelta(milliseconds=millis))
    return None


def tracked_of(message: dict[str, Any], source: str) -> Tracked:
    """The event of an event that passed `check`: id its `eid` (so a tracker's retry is a
    duplicate; a random one without), subject the user it is about, time the tracker's
    timestamp, the decoded event as data."""
    eid = message.get("eid")
    subject = None
    for name in _SUBJECTS:
        subject = _text(message.get(name))
        if subject is not None:
            break
    return tracked(
        eid if isinstance(eid, str) else str(uuid.uuid4()),
        source,
        event_type(message),
        subject,
        _time(message),
        message,
    )


def event_of(message: dict[str, Any], source: str) -> CloudEvent:
    """`tracked_of` as a `CloudEvent`."""
    return tracked_of(message, source).event()


def _text(value: Any) -> str | None:
    """An id as text: a non-empty string, or a number; else None."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return "an object" if isinstance(value, dict) else f"a {type(value).__name__}"


class SnowplowProtocol:
    """The Snowplow tracker protocol as the collector takes one (`TrackingProtocol`)."""

    check = staticmethod(check)
    tracked = staticmethod(tracked_of)


SNOWPLOW: Final = SnowplowProtocol()

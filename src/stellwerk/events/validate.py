"""Turn one decoded JSON object into a CloudEvent, or say precisely why it is not one.

The rules are those of CloudEvents 1.0.2 (core spec and JSON format), with these decisions:

- `id`, `source`, `type` must be non-empty strings and `specversion` must be "1.0". Optional
  attributes, when present, must be non-empty strings; a JSON `null` counts as absent.
- `time` must be an RFC 3339 `date-time` (the producer's string is kept as sent).
- Extension names must consist of lower-case ASCII letters and digits (a MUST of the spec). The
  spec's 20-character length is only a SHOULD, so longer names are accepted up to 64 characters;
  beyond that a name is refused as unreasonable. `data` and `data_base64` are not extensions, and
  the names of context attributes cannot be reused. Extension values must be a string, a boolean
  or an integer within the spec's 32-bit range (the CloudEvents type system has no floats, objects
  or arrays).
- `data` and `data_base64` are mutually exclusive; `data_base64` must be valid padded base64.
- Stellwerk's own extensions (`tenant`, `bus`, `recordedtime`, `replayname`) are dropped, not
  refused: Stellwerk sets them itself on every stored event, and refusing them would break
  forwarding an event from one Stellwerk bus (or site) into another.
- The size limit applies to the event's JSON as stored, without Stellwerk's extensions: the
  encoding by `encode_event`, or the bytes as sent for an event the HTTP binding keeps as it came
  (see `ingest.binding`), so a producer can predict it: 256 KiB by default, like EventBridge.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Final

import msgspec

from stellwerk.events.errors import EventError, EventErrorCode, EventProblem
from stellwerk.events.model import OWNED_EXTENSIONS, SPECVERSION, CloudEvent, ExtensionValue
from stellwerk.events.rfc3339 import is_rfc3339

MAX_EVENT_SIZE: Final = 256 * 1024
MAX_EXTENSION_NAME_LENGTH: Final = 64

_CONTEXT_ATTRIBUTES: Final = frozenset(
    {
        "id",
        "source",
        "type",
        "specversion",
        "time",
        "subject",
        "datacontenttype",
        "dataschema",
        "data",
        "data_base64",
    }
)
_NOT_EXTENSIONS: Final = _CONTEXT_ATTRIBUTES | OWNED_EXTENSIONS
_EXTENSION_NAME: Final = re.compile(r"[a-z0-9]+", re.ASCII)
_INT32_MIN: Final = -(2**31)
_INT32_MAX: Final = 2**31 - 1

_TEXT: Final = {"type": "string", "minLength": 1}
_OPTIONAL_TEXT: Final = {"anyOf": [_TEXT, {"type": "null"}]}
# What `validate_event` takes, as JSON Schema, for the API's document (the size limit aside).
# A JSON `null` counts as absent, as above; extension names are the property names that are not
# attributes; `data_base64` is the one attribute name outside [a-z0-9].
CLOUD_EVENT_SCHEMA: Final[dict[str, Any]] = {
    "title": "CloudEvent",
    "description": "A CloudEvents 1.0 event in the JSON format; extensions are further "
    "properties (names of lower-case letters and digits; a string, a boolean or a 32-bit "
    "integer). At most 256 KiB as sent. `tenant`, `bus`, `recordedtime` and `replayname` are "
    "Stellwerk's own and are dropped.",
    "type": "object",
    "properties": {
        "id": _TEXT,
        "source": _TEXT,
        "specversion": {"const": SPECVERSION},
        "type": _TEXT,
        "time": {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]},
        "subject": _OPTIONAL_TEXT,
        "datacontenttype": _OPTIONAL_TEXT,
        "dataschema": _OPTIONAL_TEXT,
        "data": {},
        "data_base64": {
            "anyOf": [
                {
                    "type": "string",
                    "contentEncoding": "base64",
                    "pattern": "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$",
                },
                {"type": "null"},
            ]
        },
        **{name: {} for name in sorted(OWNED_EXTENSIONS)},
    },
    "required": ["id", "source", "specversion", "type"],
    "propertyNames": {
        "anyOf": [
            {"pattern": f"^[a-z0-9]{{1,{MAX_EXTENSION_NAME_LENGTH}}}$"},
            {"const": "data_base64"},
        ]
    },
    "additionalProperties": {
        "anyOf": [
            {"type": "string"},
            {"type": "boolean"},
            {"type": "integer", "minimum": _INT32_MIN, "maximum": _INT32_MAX},
            {"type": "null"},
        ]
    },
    "not": {
        "required": ["data", "data_base64"],
        "properties": {"data": {"not": {"type": "null"}}, "data_base64": {"type": "string"}},
    },
}


def validate_event(obj: object) -> CloudEvent:
    """Validate one decoded JSON value as a CloudEvents 1.0 event; raise `EventError` if it is not.

    Every problem is reported at once (`EventError.problems`), required attributes first.
    """
    if not isinstance(obj, dict):
        raise EventError(
            EventErrorCode.NOT_AN_OBJECT,
            None,
            f"an event must be a JSON object, not {_json_kind(obj)}",
        )
    problems: list[EventProblem] = []
    event_id = _required_string(obj, "id", problems)
    source = _required_string(obj, "source", problems)
    specversion = obj.get("specversion")
    if specversion is None:
        message = "attribute 'specversion' is missing"
        problems.append(EventProblem(EventErrorCode.MISSING_ATTRIBUTE, "specversion", message))
    elif specversion != SPECVERSION:
        problems.append(
            EventProblem(
                EventErrorCode.INVALID_ATTRIBUTE,
                "specversion",
                f"attribute 'specversion' must be \"1.0\", not {_shown(specversion)}",
            )
        )
    event_type = _required_string(obj, "type", problems)
    time = _optional_string(obj, "time", problems)
    if time is not None and not is_rfc3339(time):
        problems.append(
            EventProblem(
                EventErrorCode.INVALID_ATTRIBUTE,
                "time",
                f"attribute 'time' must be an RFC 3339 date-time, not {_shown(time)}",
            )
        )
        time = None
    subject = _optional_string(obj, "subject", problems)
    datacontenttype = _optional_string(obj, "datacontenttype", problems)
    dataschema = _optional_string(obj, "dataschema", problems)
    data: Any = obj.get("data", msgspec.UNSET)
    if data is None:
        data = msgspec.UNSET
    data_base64 = obj.get("data_base64")
    if data_base64 is not None:
        _check_base64(data_base64, problems, has_data=data is not msgspec.UNSET)
    extensions = _extensions(obj, problems)
    if problems:
        raise EventError.of(problems)
    # No problem means each required attribute was read.
    assert event_id is not None
    assert source is not None
    assert event_type is not None
    return CloudEvent(
        id=event_id,
        source=source,
        type=event_type,
        time=time,
        subject=subject,
        datacontenttype=datacontenttype,
        dataschema=dataschema,
        data=data,
        data_base64=data_base64,
        extensions=extensions,
    )


def check_event_size(encoded: bytes, limit: int = MAX_EVENT_SIZE) -> None:
    """Refuse an encoded event above `limit` bytes with `EventTooLarge`."""
    if len(encoded) > limit:
        raise EventError(
            EventErrorCode.EVENT_TOO_LARGE,
            None,
            f"the event is {len(encoded)} bytes encoded; the limit is {limit} bytes",
        )


def _required_string(obj: dict[str, Any], name: str, problems: list[EventProblem]) -> str | None:
    value = obj.get(name)
    if value is None:
        problems.append(
            EventProblem(EventErrorCode.MISSING_ATTRIBUTE, name, f"attribute '{name}' is missing")
        )
        return None
    if not isinstance(value, str) or not value:
        problems.append(
            EventProblem(
                EventErrorCode.INVALID_ATTRIBUTE,
                name,
                f"attribute '{name}' must be a non-empty string, not {_shown(value)}",
            )
        )
        return None
    return value


def _optional_string(obj: dict[str, Any], name: str, problems: list[EventProblem]) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        problems.append(
            EventProblem(
                EventErrorCode.INVALID_ATTRIBUTE,
                name,
                f"attribute '{name}' must be a non-empty string when present, not {_shown(value)}",
            )
        )
        return None
    return value


def _check_base64(value: object, problems: list[EventProblem], *, has_data: bool) -> None:
    if has_data:
        message = "an event carries either 'data' or 'data_base64', not both"
    elif not isinstance(value, str):
        message = f"'data_base64' must be a base64 string, not {_json_kind(value)}"
    else:
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            message = "'data_base64' is not valid base64"
        else:
            return
    problems.append(EventProblem(EventErrorCode.INVALID_DATA, "data_base64", message))


def _extensions(obj: dict[str, Any], problems: list[EventProblem]) -> dict[str, ExtensionValue]:
    extensions: dict[str, ExtensionValue] = {}
    # A set difference in C finds the few extension names; sorting keeps encodings stable.
    for name in sorted(obj.keys() - _NOT_EXTENSIONS):
        value = obj[name]
        if value is None:
            continue
        if not _EXTENSION_NAME.fullmatch(name) or len(name) > MAX_EXTENSION_NAME_LENGTH:
            problems.append(
                EventProblem(
                    EventErrorCode.INVALID_EXTENSION,
                    name,
                    f"extension name {_shown(name)} must be 1 to {MAX_EXTENSION_NAME_LENGTH} "
                    "lower-case ASCII letters or digits",
                )
            )
        elif not _valid_extension_value(value):
            problems.append(
                EventProblem(
                    EventErrorCode.INVALID_EXTENSION,
                    name,
                    f"extension '{name}' must be a string, a boolean or a 32-bit integer, "
                    f"not {_shown(value)}",
                )
            )
        else:
            # 7.0 is the integer 7 to JSON Schema, and so to clients generated from it.
            extensions[name] = int(value) if isinstance(value, float) else value
    return extensions


def _valid_extension_value(value: object) -> bool:
    if isinstance(value, bool | str):
        return True
    if isinstance(value, float) and value.is_integer():
        return _INT32_MIN <= value <= _INT32_MAX
    return isinstance(value, int) and _INT32_MIN <= value <= _INT32_MAX


def _json_kind(value: object) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "null"


def _shown(value: object) -> str:
    """A bad value, short enough for a message: enough to recognise, never a whole payload."""
    if isinstance(value, dict | list):
        return _json_kind(value)
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."

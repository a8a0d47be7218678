"""Which events an erasure removes: a subject, or a value at a dotted path into the event.

Pure code, no I/O. A criterion is checked once, when the erasure is asked for (`parse`), and then
tells events apart wherever they are kept: in the log (`matches_stored`), as sent (failed events,
`matches_event`), or as delivered (a payload that a transformer may have reshaped,
`matches_payload`).

Stores search raw bytes for a *needle* before decoding anything. Stored events are kept as their
producers encoded them, and JSON lets an encoder escape any character (`"Jos\\u00e9"` for
`"José"`), so the needle is the longest run of the value's text made of characters that no common
encoder escapes (ASCII letters, digits and most punctuation). A value without such a run gets the
needle `"`, which every event's JSON holds: every event is then decoded and compared.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any, Final, Protocol

import msgspec

MAX_PATH_LENGTH: Final = 256
MAX_PATH_SEGMENTS: Final = 16
MAX_VALUE_LENGTH: Final = 1024
# Attributes the log keeps beside the body, so they match without decoding it.
_LOG_ATTRIBUTES: Final = frozenset({"id", "source", "type", "subject"})
# Extensions Stellwerk sets itself: what they hold is where an event is, not what it says.
_OWNED: Final = frozenset({"tenant", "bus", "recordedtime"})
_ATTRIBUTE: Final = re.compile(r"[a-z0-9]{1,20}")
# Never escaped by the JSON encoders in common use (Python, JavaScript, Go, Java, .NET, PHP):
# they escape quotes, backslashes, control characters, and some of `/ < > & ' + \``, and
# non-ASCII characters on request.
_UNESCAPED: Final = re.compile(r"[A-Za-z0-9 !#$%()*,\-.:;=?@\[\]^_{|}~]+")
_decode: Final = msgspec.json.decode
_ANY_JSON: Final = b'"'

Value = str | int | float | bool

_TEXT: Final = {"type": "string", "minLength": 1, "maxLength": MAX_VALUE_LENGTH}
# What `parse` takes, as JSON Schema for the API's document (`null` counts as absent there).
CRITERION_SCHEMA: Final[dict[str, Any]] = {
    "anyOf": [
        {
            "required": ["subject"],
            "properties": {"subject": _TEXT, "field": {"type": "null"}, "value": {"type": "null"}},
        },
        {
            "required": ["field", "value"],
            "properties": {
                "subject": {"type": "null"},
                "field": {
                    "type": "string",
                    "maxLength": MAX_PATH_LENGTH,
                    "pattern": rf"^(data(\.[^.]+){{0,{MAX_PATH_SEGMENTS - 1}}}|[a-z0-9]{{1,20}})$",
                    "not": {"enum": sorted(_OWNED)},
                },
                "value": {"anyOf": [_TEXT, {"type": "number"}, {"type": "boolean"}]},
            },
        },
    ]
}


class Recorded(Protocol):
    """An event as the log or an archive holds it: attributes beside its JSON body."""

    @property
    def id(self) -> str: ...

    @property
    def source(self) -> str: ...

    @property
    def type(self) -> str: ...

    @property
    def subject(self) -> str | None: ...

    @property
    def body(self) -> bytes: ...


class InvalidCriterion(ValueError):
    """The criterion cannot be used; `field` names the part of the request that is wrong."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class Criterion(msgspec.Struct, frozen=True, omit_defaults=True):
    """`subject`, or `field` (a dotted path such as `data.userId`) and `value`.

    Stored as the JSON of the audit entry; build one with `parse`, which checks it.
    """

    subject: str | None = None
    field: str | None = None
    value: Value | None = None

    @property
    def path(self) -> tuple[str, ...]:
        return ("subject",) if self.subject is not None else tuple((self.field or "").split("."))

    @property
    def target(self) -> Value:
        """The value events are erased for."""
        if self.subject is not None:
            return self.subject
        assert self.value is not None
        return self.value

    @property
    def needle(self) -> bytes:
        """Bytes that every matching event's JSON holds however it was encoded; never empty."""
        return needle_of(self.target) or _ANY_JSON

    @property
    def payload_needle(self) -> bytes:
        """Bytes that every matching delivery payload holds, JSON or text (b"": none known)."""
        return needle_of(self.target).strip(b'"')

    def matches_stored(self, event: Recorded) -> bool:
        """Whether a logged or archived event matches, by its attributes before its body."""
        path = self.path
        if len(path) == 1 and path[0] in _LOG_ATTRIBUTES:
            return _equal(getattr(event, path[0]), self.target)
        return self.matches_event(event.body)

    def matches_event(self, body: bytes) -> bool:
        """Whether an event in the CloudEvents JSON format matches (False if it is not JSON)."""
        try:
            event = _decode(body)
        except msgspec.DecodeError:
            return False
        return isinstance(event, dict) and any(
            _equal(found, self.target) for found in _walk(event, self.path)
        )

    def matches_payload(self, payload: bytes, content_type: str) -> bool:
        """Whether a delivery's payload carries the value.

        An event as it is (CloudEvents JSON) matches as `matches_event`. A transformer's output
        no longer has the event's shape, so it matches when the value is anywhere in it: a
        transformed copy that still holds the value is the person's data either way.
        """
        if content_type == "application/cloudevents+json":
            return self.matches_event(payload)
        try:
            document = _decode(payload)
        except msgspec.DecodeError:
            target = self.target
            return isinstance(target, str) and target.encode() in payload
        return any(_equal(found, self.target) for found in _scalars(document))


def parse(subject: object, field: object, value: object) -> Criterion:
    """Check a request's criterion: a subject, or a field path and a scalar value."""
    if subject is not None and field is not None:
        raise InvalidCriterion("give either subject or field and value, not both", "subject")
    if subject is not None:
        if value is not None:
            raise InvalidCriterion("value goes with field, not with subject", "value")
        return Criterion(subject=_text(subject, "subject"))
    if field is None:
        raise InvalidCriterion("give subject, or field and value", "subject")
    if not isinstance(field, str):
        raise InvalidCriterion("field must be a dotted path such as data.userId", "field")
    _check_path(field)
    if value is None:
        raise InvalidCriterion("field needs a value (a string, number or boolean)", "value")
    if isinstance(value, str):
        return Criterion(field=field, value=_text(value, "value"))
    if isinstance(value, bool | int) or (isinstance(value, float) and math.isfinite(value)):
        return Criterion(field=field, value=value)
    raise InvalidCriterion("value must be a string, number or boolean", "value")


def _text(value: object, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidCriterion(f"{name} must be a non-empty string", name)
    if len(value) > MAX_VALUE_LENGTH:
        raise InvalidCriterion(f"{name} is longer than {MAX_VALUE_LENGTH} characters", name)
    return value


def _check_path(path: str) -> None:
    segments = path.split(".")
    if len(path) > MAX_PATH_LENGTH or len(segments) > MAX_PATH_SEGMENTS:
        raise InvalidCriterion(
            f"field is longer than {MAX_PATH_LENGTH} characters or {MAX_PATH_SEGMENTS} parts",
            "field",
        )
    if any(not segment for segment in segments):
        raise InvalidCriterion(f"field {path!r} has an empty part", "field")
    head = segments[0]
    if head == "data":
        return
    if not _ATTRIBUTE.fullmatch(head):
        raise InvalidCriterion(
            f"field {path!r} must start with data or name an attribute (a-z, 0-9)", "field"
        )
    if head in _OWNED:
        raise InvalidCriterion(f"field {path!r} names an extension Stellwerk sets itself", "field")
    if len(segments) > 1:
        raise InvalidCriterion(f"field {path!r}: the attribute {head} has no parts", "field")


def needle_of(value: Value) -> bytes:
    """The longest part of the value's JSON that no encoder writes differently (b"": none).

    A string made only of such characters comes with its quotes, which makes it more selective.
    """
    if isinstance(value, bool):
        return b"true" if value else b"false"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        # 42 may be sent as 42 or 42.0; both contain "42". Exponents (4.2e1) are not looked for.
        number = int(value)
        return str(number).encode() if abs(number) < 10**15 else b""
    if isinstance(value, float):
        return b""
    runs = _UNESCAPED.findall(value)
    if len(runs) == 1 and runs[0] == value:
        return b'"' + value.encode() + b'"'
    return max(runs, key=len, default="").encode()


def _walk(node: Any, path: tuple[str, ...]) -> Iterator[Any]:
    """The values at `path`; an array on the way stands for each of its elements."""
    if isinstance(node, list):
        for item in node:
            yield from _walk(item, path)
        return
    if not path:
        yield node
        return
    if isinstance(node, dict) and path[0] in node:
        yield from _walk(node[path[0]], path[1:])


def _scalars(node: Any) -> Iterator[Any]:
    if isinstance(node, dict):
        for item in node.values():
            yield from _scalars(item)
    elif isinstance(node, list):
        for item in node:
            yield from _scalars(item)
    else:
        yield node


def _equal(found: Any, target: Value) -> bool:
    if isinstance(target, bool) or isinstance(found, bool):
        return found is target
    if isinstance(target, int | float):
        return isinstance(found, int | float) and found == target
    return isinstance(found, str) and found == target

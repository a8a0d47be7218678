"""The CloudEvents HTTP binding (1.0.2): one request's content type, headers and body to events.

How it is shaped and why: docs/ingest.md ("stellwerk.ingest.binding").
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from itertools import count
from typing import Annotated, Any, Final, Literal

import msgspec

from stellwerk.events import (
    MAX_EVENT_SIZE,
    CloudEvent,
    EventError,
    EventErrorCode,
    EventProblem,
    all_rfc3339,
    check_event_size,
    encode_event,
    is_rfc3339,
    validate_event,
)

STRUCTURED_CONTENT_TYPE: Final = "application/cloudevents+json"
BATCH_CONTENT_TYPE: Final = "application/cloudevents-batch+json"
JSON_CONTENT_TYPE: Final = "application/json"

_CE_PREFIX: Final = "ce-"
_decoder: Final = msgspec.json.Decoder()
_raw_list_decoder: Final = msgspec.json.Decoder(list[msgspec.Raw])
_NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
_NO_DATA: Final = msgspec.Raw(b"")
# The fast path stores the event as sent only up to this share of the size limit: re-encoding
# can make an event longer than sent (`1e2` becomes `100.0`), so near the limit the exact size
# is computed the slow way.
_FAST_SIZE_SHARE: Final = 4


class _Envelope(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """An event that can be stored as sent: the context attributes only, all well formed.

    Anything else (an extension, a null, `data_base64`) does not decode into it, and the event
    takes the slow path, which knows what to do and how to explain a refusal. Not tracked by the
    garbage collector (`gc=False`): it holds strings only, one is made per event.
    """

    id: _NonEmpty
    source: _NonEmpty
    specversion: Literal["1.0"]
    type: _NonEmpty
    time: str | msgspec.UnsetType = msgspec.UNSET
    subject: _NonEmpty | msgspec.UnsetType = msgspec.UNSET
    datacontenttype: _NonEmpty | msgspec.UnsetType = msgspec.UNSET
    dataschema: _NonEmpty | msgspec.UnsetType = msgspec.UNSET
    data: msgspec.Raw = _NO_DATA


_envelope_decoder: Final = msgspec.json.Decoder(_Envelope)


class Mode(StrEnum):
    """How the events travel in the request."""

    STRUCTURED = "structured"
    BINARY = "binary"
    BATCH = "batch"
    JSON = "json"


class BindingErrorCode(StrEnum):
    """Reasons a whole request is refused; the values travel in API answers as `error`."""

    INVALID_JSON = "InvalidJson"
    NOT_AN_OBJECT = "NotAnObject"
    NOT_AN_ARRAY = "NotAnArray"
    NOT_AN_OBJECT_OR_ARRAY = "NotAnObjectOrArray"
    UNSUPPORTED_MEDIA_TYPE = "UnsupportedMediaType"
    BODY_TOO_LARGE = "BodyTooLarge"
    BATCH_TOO_LARGE = "BatchTooLarge"


class BindingError(Exception):
    """The request as a whole cannot be read; answer `status` with `code` and `message`."""

    def __init__(self, status: int, code: BindingErrorCode, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class BindingLimits:
    """Limits on one request; the HTTP layer should stop reading a body above `max_body_size`."""

    max_body_size: int = 4 * 1024 * 1024
    max_batch_size: int = 1000
    max_event_size: int = MAX_EVENT_SIZE


class DecodedEvent:
    """A valid event at `index` of the request, with its JSON encoding: one object, no line breaks.

    `encoded` is the event as sent when it needed no change, else `encode_event`'s encoding; it
    never holds Stellwerk's own extensions. `event`, the whole `CloudEvent`, is decoded from it
    on first use (only schema checks need the data as Python objects).
    """

    __slots__ = ("_event", "encoded", "id", "index", "source", "subject", "type")

    def __init__(
        self,
        index: int,
        encoded: bytes,
        id: str,
        source: str,
        type: str,
        subject: str | None,
        event: CloudEvent | None = None,
    ) -> None:
        # The attributes may be passed by position: the fast path makes one per event, and
        # keywords cost it twice as much (0.35 against 0.18 µs).
        self.index = index
        self.encoded = encoded
        self.id = id
        self.source = source
        self.type = type
        self.subject = subject
        self._event = event

    @classmethod
    def of(cls, index: int, event: CloudEvent, encoded: bytes) -> DecodedEvent:
        return cls(
            index,
            encoded,
            id=event.id,
            source=event.source,
            type=event.type,
            subject=event.subject,
            event=event,
        )

    @property
    def event(self) -> CloudEvent:
        if self._event is None:
            self._event = validate_event(_decoder.decode(self.encoded))
        return self._event

    def __repr__(self) -> str:
        return f"DecodedEvent({self.index}, id={self.id!r}, {len(self.encoded)} bytes)"


@dataclass(frozen=True, slots=True)
class EventFailure:
    """The event at `index` was refused; `id` is its id when it had a usable one.

    `code`, `attribute` and `message` describe the first problem, `problems` all of them.
    """

    index: int
    id: str | None
    code: EventErrorCode
    attribute: str | None
    message: str
    problems: tuple[EventProblem, ...] = ()

    def __post_init__(self) -> None:
        if not self.problems:
            one = (EventProblem(self.code, self.attribute, self.message),)
            object.__setattr__(self, "problems", one)


DecodeResult = DecodedEvent | EventFailure


# Content types whose mode the headers do not change (structured and batch), as sent: a
# client sends the same one with every request. Bounded: cleared when full.
_KNOWN_MODES: dict[str, Mode] = {}
_KNOWN_MODES_MAX = 64


def detect_mode(content_type: str | None, headers: Mapping[str, str]) -> Mode:
    """The binding mode of a request; raise `BindingError` (415) if Stellwerk does not take it."""
    if content_type is not None:
        known = _KNOWN_MODES.get(content_type)
        if known is not None:
            return known
    mode = _detect_mode(content_type, headers)
    if content_type is not None and mode in (Mode.STRUCTURED, Mode.BATCH):
        if len(_KNOWN_MODES) >= _KNOWN_MODES_MAX:
            _KNOWN_MODES.clear()
        _KNOWN_MODES[content_type] = mode
    return mode


def _detect_mode(content_type: str | None, headers: Mapping[str, str]) -> Mode:
    media_type, params = _parse_content_type(content_type)
    if media_type == STRUCTURED_CONTENT_TYPE:
        mode = Mode.STRUCTURED
    elif media_type == BATCH_CONTENT_TYPE:
        mode = Mode.BATCH
    elif any(name.lower() == "ce-specversion" for name in headers):
        return Mode.BINARY
    elif media_type == JSON_CONTENT_TYPE:
        mode = Mode.JSON
    else:
        shown = repr(media_type) if media_type else "no content type"
        raise BindingError(
            415,
            BindingErrorCode.UNSUPPORTED_MEDIA_TYPE,
            f"{shown} is not accepted: send {STRUCTURED_CONTENT_TYPE}, {BATCH_CONTENT_TYPE}, "
            f"{JSON_CONTENT_TYPE}, or binary mode with ce-* headers",
        )
    charset = params.get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise BindingError(
            415,
            BindingErrorCode.UNSUPPORTED_MEDIA_TYPE,
            f"charset {charset!r} is not accepted: JSON is UTF-8",
        )
    return mode


def decode_request(
    content_type: str | None,
    headers: Mapping[str, str],
    body: bytes,
    limits: BindingLimits | None = None,
) -> list[DecodeResult]:
    """Decode one HTTP request of the CloudEvents binding into a result per event, in order.

    `content_type` is the request's `Content-Type` header (also expected in `headers` or not:
    it is read from the argument only). Header names are matched case-insensitively.
    """
    limits = limits or BindingLimits()
    mode = detect_mode(content_type, headers)
    if len(body) > limits.max_body_size:
        raise BindingError(
            413,
            BindingErrorCode.BODY_TOO_LARGE,
            f"the body is {len(body)} bytes; the limit is {limits.max_body_size} bytes",
        )
    if mode is Mode.BINARY:
        return [_decode_binary(content_type, headers, body, limits)]
    fast = _decode_fast(mode, body, limits)
    if fast is not None:
        return fast
    value = _decode_json(body)
    if mode is Mode.STRUCTURED:
        if not isinstance(value, dict):
            raise BindingError(
                400,
                BindingErrorCode.NOT_AN_OBJECT,
                f"a structured-mode body must be one JSON object, not {_kind(value)}",
            )
        items: list[Any] = [value]
    elif mode is Mode.BATCH:
        if not isinstance(value, list):
            raise BindingError(
                400,
                BindingErrorCode.NOT_AN_ARRAY,
                f"a batch-mode body must be a JSON array, not {_kind(value)}",
            )
        items = value
    elif isinstance(value, dict):
        items = [value]
    elif isinstance(value, list):
        items = value
    else:
        raise BindingError(
            400,
            BindingErrorCode.NOT_AN_OBJECT_OR_ARRAY,
            f"an application/json body must be an event object or an array, not {_kind(value)}",
        )
    if len(items) > limits.max_batch_size:
        raise BindingError(
            413,
            BindingErrorCode.BATCH_TOO_LARGE,
            f"the batch has {len(items)} events; the limit is {limits.max_batch_size}",
        )
    return [_decode_one(index, item, limits) for index, item in enumerate(items)]


def _decode_fast(mode: Mode, body: bytes, limits: BindingLimits) -> list[DecodeResult] | None:
    """The events of a JSON body kept as sent where they can be; None: use the slow path."""
    text = body.strip(b" \t\r\n")
    if not text:
        return None
    single = text[0] == 0x7B  # "{"
    # Line breaks can only be whitespace between tokens; stored events have none, so that each
    # is one line wherever it goes (server-sent events, say). A body without any needs no look
    # at each of its events.
    one_line = b"\n" not in text and b"\r" not in text
    if single and mode is not Mode.BATCH:
        return [_decode_raw(0, msgspec.Raw(text), limits, one_line)]
    if text[0] != 0x5B or mode is Mode.STRUCTURED:  # "[": anything else has its error there
        return None
    try:
        items = _raw_list_decoder.decode(text)
    except (msgspec.DecodeError, ValueError, RecursionError):
        return None
    if len(items) > limits.max_batch_size:
        return None
    uniform = _decode_uniform(items, limits, one_line)
    if uniform is not None:
        return uniform
    return [_decode_raw(index, item, limits, one_line) for index, item in enumerate(items)]


def _decode_uniform(
    items: list[msgspec.Raw], limits: BindingLimits, one_line: bool
) -> list[DecodeResult] | None:
    """A batch whose every event `_decode_raw` keeps as sent, decoded with the same checks a
    step at a time for the whole batch (each a loop in C, or one comprehension) instead of a
    call per event; None: some event is not, and each goes its own way."""
    if not items:
        return None
    try:
        envelopes = list(map(_envelope_decoder.decode, items))
    except (msgspec.DecodeError, ValueError, RecursionError):
        return None
    encoded = list(map(bytes, items))
    if not one_line or max(map(len, encoded)) > limits.max_event_size // _FAST_SIZE_SHARE:
        return None
    datas = [envelope.data for envelope in envelopes]
    if 4 in map(len, datas) and any(len(d) == 4 and bytes(d) == b"null" for d in datas):
        return None
    unset = msgspec.UNSET
    times = [envelope.time for envelope in envelopes]
    if not all_rfc3339([time for time in times if time is not unset]):
        return None
    return [
        DecodedEvent(
            index,
            body,
            envelope.id,
            envelope.source,
            envelope.type,
            None if envelope.subject is unset else envelope.subject,
        )
        for index, body, envelope in zip(count(), encoded, envelopes)
    ]


def _decode_raw(
    index: int, raw: msgspec.Raw, limits: BindingLimits, one_line: bool
) -> DecodeResult:
    """One event from its JSON text: kept as sent if the envelope fits, else the slow path.
    `one_line`: the whole body has no line break, so this event has none either."""
    try:
        envelope = _envelope_decoder.decode(raw)
    except (msgspec.DecodeError, ValueError, RecursionError):
        envelope = None
    if envelope is not None:
        encoded = bytes(raw)
        time = envelope.time
        data = envelope.data
        if (
            (time is msgspec.UNSET or is_rfc3339(time))
            and len(encoded) * _FAST_SIZE_SHARE <= limits.max_event_size
            # A JSON null in data is no data, which the slow path writes by leaving it out.
            and (len(data) != 4 or bytes(data) != b"null")
            and (one_line or (b"\n" not in encoded and b"\r" not in encoded))
        ):
            subject = envelope.subject
            return DecodedEvent(
                index,
                encoded,
                envelope.id,
                envelope.source,
                envelope.type,
                None if subject is msgspec.UNSET else subject,
            )
    return _decode_one(index, _decode_json(raw), limits)


def _decode_one(index: int, obj: object, limits: BindingLimits) -> DecodeResult:
    try:
        event = validate_event(obj)
        encoded = encode_event(event)
        check_event_size(encoded, limits.max_event_size)
    except EventError as exc:
        return EventFailure(index, _id_of(obj), exc.code, exc.attribute, exc.message, exc.problems)
    return DecodedEvent.of(index, event, encoded)


def _decode_binary(
    content_type: str | None, headers: Mapping[str, str], body: bytes, limits: BindingLimits
) -> DecodeResult:
    obj: dict[str, Any] = {}
    for name, value in headers.items():
        lowered = name.lower()
        # datacontenttype travels as Content-Type in binary mode, never as a ce- header.
        if not lowered.startswith(_CE_PREFIX) or lowered == "ce-datacontenttype":
            continue
        attribute = lowered[len(_CE_PREFIX) :]
        if attribute in ("data", "data_base64"):
            return EventFailure(
                0,
                _id_of(obj),
                EventErrorCode.INVALID_EXTENSION,
                attribute,
                f"header '{name}' is not allowed: the body carries the data in binary mode",
            )
        try:
            obj[attribute] = percent_decode(value)
        except ValueError:
            return EventFailure(
                0,
                _id_of(obj),
                EventErrorCode.INVALID_ATTRIBUTE,
                attribute,
                f"header '{name}' is not valid percent-encoded UTF-8",
            )
    if content_type:
        obj["datacontenttype"] = content_type
    if body:
        if content_type and not _is_json(content_type):
            obj["data_base64"] = base64.b64encode(body).decode("ascii")
        else:
            try:
                obj["data"] = _decoder.decode(body)
            except (msgspec.DecodeError, ValueError, RecursionError):  # ValueError: not UTF-8
                if content_type:
                    return EventFailure(
                        0,
                        _id_of(obj),
                        EventErrorCode.INVALID_DATA,
                        "data",
                        f"the body is not valid JSON but the content type is {content_type!r}",
                    )
                obj["data_base64"] = base64.b64encode(body).decode("ascii")
    return _decode_one(0, obj, limits)


def percent_decode(value: str) -> str:
    """Undo the binding's percent-encoding of a header value (section 3.1.3.2), strictly as UTF-8.

    Raise ValueError for a malformed escape or bytes that are not UTF-8. Servers hand over header
    bytes as Latin-1 text, so non-ASCII characters are turned back into their bytes first.
    """
    if "%" not in value and value.isascii():
        return value
    try:
        raw = value.encode("latin-1")
    except UnicodeEncodeError:
        raw = value.encode("utf-8")
    out = bytearray()
    i = 0
    while i < len(raw):
        byte = raw[i]
        if byte == 0x25:  # "%"
            escape = raw[i + 1 : i + 3]
            if len(escape) != 2:
                raise ValueError("truncated percent escape")
            try:
                out += binascii.unhexlify(escape)
            except binascii.Error:
                raise ValueError("malformed percent escape") from None
            i += 3
        else:
            out.append(byte)
            i += 1
    return out.decode("utf-8")


def _decode_json(body: bytes | msgspec.Raw) -> Any:
    try:
        return _decoder.decode(body)
    except (msgspec.DecodeError, ValueError, RecursionError) as exc:  # ValueError: not UTF-8
        raise BindingError(
            400, BindingErrorCode.INVALID_JSON, f"the body is not valid JSON: {exc}"
        ) from None


def _parse_content_type(content_type: str | None) -> tuple[str, dict[str, str]]:
    if not content_type:
        return "", {}
    media_type, _, rest = content_type.partition(";")
    params: dict[str, str] = {}
    for part in rest.split(";"):
        key, sep, val = part.partition("=")
        if sep:
            params[key.strip().lower()] = val.strip().strip('"')
    return media_type.strip().lower(), params


def _is_json(content_type: str) -> bool:
    media_type = _parse_content_type(content_type)[0]
    return media_type in ("application/json", "text/json") or media_type.endswith("+json")


def _id_of(obj: object) -> str | None:
    if isinstance(obj, dict):
        event_id = obj.get("id")
        if isinstance(event_id, str) and event_id:
            return event_id
    return None


def _kind(value: object) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    return "a boolean" if isinstance(value, bool) else "a number"

"""EventBridge's operations, each over the application layer's facades: the same buses, the
same log and the same pattern language as the native API, in EventBridge's request and answer
shapes (docs/eventbridge-api.md lists what each takes and how it maps)."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

import msgspec

from stellwerk.auth import Principal, Scope
from stellwerk.awsapi.errors import AwsError, from_service, not_found, validation
from stellwerk.awsapi.ids import new_ids
from stellwerk.awsapi.store import AwsStore
from stellwerk.capability import Facades
from stellwerk.events import MAX_EVENT_SIZE, SPECVERSION
from stellwerk.events.envelope import REGION_EXTENSION, RESOURCES_EXTENSION
from stellwerk.ingest import DecodedEvent
from stellwerk.patterns import InvalidPatternError, compile_pattern
from stellwerk.service import (
    BusInput,
    NotFound,
    Platform,
    RequestRateSpent,
    ServiceError,
    TooManyRequests,
)

MAX_ENTRIES: Final = 10
MAX_ENTRIES_BYTES: Final = 256 * 1024
DEFAULT_BUS: Final = "default"

Params = dict[str, Any]
_encode: Final = msgspec.json.Encoder().encode
_decode: Final = msgspec.json.Decoder().decode


@dataclass(frozen=True, slots=True)
class Call:
    """One operation's call: who, in which region (the signature's), with what; `url` is the
    server's as the call reached it (scheme and host)."""

    platform: Platform
    principal: Principal
    region: str
    params: Params
    store: AwsStore
    facades: Facades
    url: str

    def arn(self, resource: str) -> str:
        return f"arn:aws:events:{self.region}:{self.principal.tenant}:{resource}"

    def string(self, name: str, *, required: bool = False, default: str | None = None) -> str:
        value = self.params.get(name, default)
        if value is None:
            if required:
                raise validation(f"1 validation error detected: {name} must not be null")
            return ""
        if not isinstance(value, str):
            raise AwsError("SerializationException", f"{name} must be a string")
        return value


# An operation's answer: its JSON as a value, or already encoded (PutEvents' usual answer).
Answered = dict[str, Any] | msgspec.Raw


@dataclass(frozen=True, slots=True)
class Operation:
    """`decode`, if given, reads the body of the usual call faster than as any JSON (the
    parameters, or None for anything else, which is then read as any JSON is)."""

    scope: Scope
    run: Callable[[Call], Awaitable[Answered]]
    decode: Callable[[bytes], Params | None] | None = None


def bus_name(value: str) -> str:
    """A bus's name from its name or its ARN (`arn:aws:events:<region>:<account>:event-bus/x`)."""
    if value.startswith("arn:"):
        _, _, resource = value.rpartition(":")
        kind, _, name = resource.partition("/")
        if kind != "event-bus" or not name:
            raise validation(f"{value!r} is not the ARN of an event bus")
        return name
    return value


# Events --------------------------------------------------------------------------------------


class _Entry(msgspec.Struct, gc=False):
    """A PutEvents entry of the usual shape, every field of its type. An entry that is not
    (a null, a number for a string, not an object) fails the fast decoding of the call, which
    is then read as any JSON and each entry checked the general way (`_stored`), with the same
    answers."""

    Source: str = ""
    DetailType: str = ""
    Detail: str = ""
    Resources: list[str] = []
    EventBusName: str = ""
    Time: str | int | float | None = None
    TraceHeader: str = ""


class _PutEventsCall(msgspec.Struct, gc=False):
    Entries: list[_Entry]
    EndpointId: str | None = None


class _AnyObject(msgspec.Struct, gc=False):
    """Any JSON object: decoding into it checks the text and skips every member."""


_put_events_decoder: Final = msgspec.json.Decoder(_PutEventsCall)
_object_check: Final = msgspec.json.Decoder(_AnyObject).decode


def put_events_params(body: bytes) -> Params | None:
    """PutEvents' parameters with its entries as `_Entry`, or None for a body of another shape
    (read then as any JSON, and refused or answered the general way)."""
    try:
        decoded = _put_events_decoder.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return None
    params: Params = {"Entries": decoded.Entries}
    if decoded.EndpointId is not None:
        params["EndpointId"] = decoded.EndpointId
    return params


async def put_events(
    call: Call, *, endpoint: str = "", endpoint_buses: tuple[str, ...] = ()
) -> Answered:
    """PutEvents; through global endpoint `endpoint` (PutEvents' `EndpointId`), an entry may go
    only to one of its buses, `endpoint_buses`."""
    entries = call.params.get("Entries")
    if not isinstance(entries, list) or not entries:
        raise validation("1 validation error detected: Entries must have at least 1 member")
    if len(entries) > MAX_ENTRIES:
        raise validation(
            "1 validation error detected: Value at 'entries' failed to satisfy constraint: "
            f"Member must have length less than or equal to {MAX_ENTRIES}"
        )
    refused: dict[int, tuple[str, str]] = {}  # by position: the entry's ErrorCode, ErrorMessage
    by_bus: dict[str, _Placed] = {}
    ids = new_ids(len(entries))
    now = _now()
    now_json = b'"%s"' % now.encode()  # a timestamp holds nothing to escape
    region = _encode(call.region)
    total = 0
    for index, entry in enumerate(entries):
        try:
            if type(entry) is _Entry:
                bus, event, size = _stored_fast(region, entry, index, ids[index], now_json)
            else:
                bus, event, size = _stored(call.region, entry, index, ids[index], now)
        except _EntryError as exc:
            refused[index] = (exc.code, exc.message)
            continue
        total += size
        if endpoint and bus not in endpoint_buses:
            refused[index] = (
                "InvalidArgument",
                f"Event bus {bus} is not a bus of endpoint {endpoint}.",
            )
            continue
        if len(event.encoded) > MAX_EVENT_SIZE:
            refused[index] = (
                "InvalidArgument",
                f"The event is {len(event.encoded)} bytes as stored; the limit is "
                f"{MAX_EVENT_SIZE}.",
            )
            continue
        placed = by_bus.get(bus)
        if placed is None:
            placed = by_bus[bus] = _Placed([], [])
        # Numbered from 0 on its bus, as ingest's take wants them.
        event.index = len(placed.positions)
        placed.positions.append(index)
        placed.events.append(event)
    if total > MAX_ENTRIES_BYTES:
        raise validation("Total size of the entries in the request is over the limit.")
    for bus, placed in by_bus.items():
        await _put_on_bus(call, bus, placed, refused)
    if not refused:  # the usual answer, written at once
        return msgspec.Raw(
            b'{"FailedEntryCount":0,"Entries":[{"EventId":"%s"}]}'
            % '"},{"EventId":"'.join(ids).encode()
        )
    results: list[dict[str, str]] = []
    for index, event_id in enumerate(ids):
        error = refused.get(index)
        results.append(
            {"EventId": event_id}
            if error is None
            else {"ErrorCode": error[0], "ErrorMessage": error[1]}
        )
    return {"FailedEntryCount": len(refused), "Entries": results}


class _EntryError(Exception):
    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message


class _Placed(NamedTuple):
    """One bus's events of a call: their positions in the call's entries, and the events."""

    positions: list[int]
    events: list[DecodedEvent]


def _stored(
    region: str, entry: object, index: int, event_id: str, now: str
) -> tuple[str, DecodedEvent, int]:
    """The bus and the stored event of one PutEvents entry, and its size as EventBridge counts
    it. The event is encoded straight from the entry, in the order and form `encode_event`
    gives a `CloudEvent` (the PutEvents path's cost is mostly per entry)."""
    if not isinstance(entry, dict):
        raise _EntryError("InvalidArgument", "An entry must be an object.")
    source = _required(entry, "Source")
    detail_type = _required(entry, "DetailType")
    detail_text = _required(entry, "Detail")
    try:
        detail = _decode(detail_text)
    except (msgspec.DecodeError, RecursionError):  # RecursionError: nested too deep
        raise _EntryError("MalformedDetail", "Detail is malformed.") from None
    if not isinstance(detail, dict):
        raise _EntryError("MalformedDetail", "Detail is malformed.")
    resources = entry.get("Resources") or []
    if not isinstance(resources, list) or not all(isinstance(r, str) for r in resources):
        raise _EntryError("InvalidArgument", "Parameter Resources is not valid.")
    bus = entry.get("EventBusName") or DEFAULT_BUS
    if not isinstance(bus, str):
        raise _EntryError("InvalidArgument", "Parameter EventBusName is not valid.")
    try:
        bus = bus_name(bus)
    except AwsError as exc:
        raise _EntryError("InvalidArgument", exc.message) from None
    when = entry.get("Time")
    event: dict[str, Any] = {
        "specversion": SPECVERSION,
        "id": event_id,
        "source": source,
        "type": detail_type,
        "time": now if when is None else _time(when),
        "datacontenttype": "application/json",
        REGION_EXTENSION: region,
    }
    if resources:  # a CloudEvents extension holds no list: kept as its JSON
        event[RESOURCES_EXTENSION] = _encode(resources).decode()
    event["data"] = detail
    size = _utf8_length(source) + _utf8_length(detail_type) + _utf8_length(detail_text)
    size += sum(_utf8_length(r) for r in resources)
    stored = DecodedEvent(index, _encode(event), event_id, source, detail_type, None)
    return bus, stored, size


def _required(entry: dict[str, Any], name: str) -> str:
    value = entry.get(name)
    if not isinstance(value, str) or not value:
        raise _missing(name)
    return value


def _missing(name: str) -> _EntryError:
    return _EntryError(
        "InvalidArgument", f"Parameter {name} is not valid. Reason: {name} is a required argument."
    )


_MALFORMED_DETAIL: Final = ("MalformedDetail", "Detail is malformed.")
# The stored event as `_stored` encodes it, filled in by one formatting: id, source, type,
# time, region, the Resources extension (or nothing), data.
_EVENT: Final = (
    b'{"specversion":"'
    + SPECVERSION.encode()
    + b'","id":"%s","source":%s,"type":%s,"time":%s,"datacontenttype":"application/json","'
    + REGION_EXTENSION.encode()
    + b'":%s%s,"data":%s}'
)
_RESOURCES: Final = b',"' + RESOURCES_EXTENSION.encode() + b'":'


def _stored_fast(
    region: bytes, entry: _Entry, index: int, event_id: str, now: bytes
) -> tuple[str, DecodedEvent, int]:
    """`_stored` for an entry decoded as `_Entry`, with the same checks and answers; `region`
    and `now` are the call's region and time as JSON. The event is written in one formatting,
    in `_stored`'s order, and its `data` is the entry's `Detail` as sent unless that spans lines
    (native ingest too keeps `data` as sent): checked as a JSON object without being built."""
    source, detail_type, detail_text = entry.Source, entry.DetailType, entry.Detail
    if not source:
        raise _missing("Source")
    if not detail_type:
        raise _missing("DetailType")
    if not detail_text:
        raise _missing("Detail")
    detail = detail_text.encode()
    size = len(detail)
    size += len(source) if source.isascii() else len(source.encode())
    size += len(detail_type) if detail_type.isascii() else len(detail_type.encode())
    try:
        if "\n" in detail_text or "\r" in detail_text:  # one line, as every stored event
            value = _decode(detail)
            if not isinstance(value, dict):
                raise _EntryError(*_MALFORMED_DETAIL)
            detail = _encode(value)
        else:
            _object_check(detail)
    except (msgspec.DecodeError, RecursionError):
        raise _EntryError(*_MALFORMED_DETAIL) from None
    bus = entry.EventBusName or DEFAULT_BUS
    if bus.startswith("arn:"):
        try:
            bus = bus_name(bus)
        except AwsError as exc:
            raise _EntryError("InvalidArgument", exc.message) from None
    when = entry.Time
    resources = entry.Resources
    extension = b""
    if resources:  # a CloudEvents extension holds no list: kept as its JSON
        extension = _RESOURCES + _encode(_encode(resources).decode())
        size += sum(_utf8_length(r) for r in resources)
    encoded = _EVENT % (
        event_id.encode(),
        _encode(source),
        _encode(detail_type),
        now if when is None else _encode(_time(when)),
        region,
        extension,
        detail,
    )
    return bus, DecodedEvent(index, encoded, event_id, source, detail_type, None), size


def _utf8_length(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _time(value: object) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _rfc3339(datetime.fromtimestamp(value, UTC))
    if isinstance(value, str) and value:
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise _EntryError("InvalidArgument", "Parameter Time is not valid.") from None
        return _rfc3339(when if when.tzinfo is not None else when.replace(tzinfo=UTC))
    raise _EntryError("InvalidArgument", "Parameter Time is not valid.")


async def _put_on_bus(
    call: Call, bus: str, placed: _Placed, refused: dict[int, tuple[str, str]]
) -> None:
    """Take one bus's events through the edge's guards (suppressions, schemas, the tenant's
    event rate), as native ingest does, without encoding them as a request to decode again;
    what is refused goes into `refused` by its position in the call."""
    try:
        taken = await call.platform.ingest.take_encoded(call.principal.ref, bus, placed.events)
    except ServiceError as exc:
        if isinstance(exc, RequestRateSpent):
            raise  # the call as a whole, as the gate's refusal was before
        if isinstance(exc, NotFound):
            code, message = "ResourceNotFoundException", f"Event bus {bus} does not exist."
        elif isinstance(exc, TooManyRequests):
            code, message = "ThrottlingException", exc.message
        else:
            code, message = from_service(exc).code, exc.message
        for position in placed.positions:
            refused[position] = (code, message)
        return
    for failed in taken.failed:
        refused[placed.positions[failed.index]] = ("InvalidArgument", failed.message)


async def test_event_pattern(call: Call) -> dict[str, Any]:
    pattern_text = call.string("EventPattern", required=True)
    event_text = call.string("Event", required=True)
    try:
        pattern = compile_pattern(pattern_text)
    except InvalidPatternError as exc:
        raise AwsError(
            "InvalidEventPatternException", f"Event pattern is not valid. Reason: {exc}"
        ) from None
    try:
        event = msgspec.json.decode(event_text)
    except (msgspec.DecodeError, RecursionError):
        raise validation("Parameter Event is not valid.") from None
    if not isinstance(event, dict):
        raise validation("Parameter Event is not valid.")
    missing = [
        name
        for name in ("id", "account", "source", "time", "region", "detail-type")
        if name not in event
    ]
    if missing:
        raise validation(f"Parameter Event is not valid. Reason: missing {', '.join(missing)}.")
    return {"Result": pattern.matches(event)}


# Buses ---------------------------------------------------------------------------------------


def _bus_answer(call: Call, bus: Any) -> dict[str, Any]:
    shown: dict[str, Any] = {"Name": bus.name, "Arn": call.arn(f"event-bus/{bus.name}")}
    if bus.description:
        shown["Description"] = bus.description
    shown["CreationTime"] = bus.created_at.timestamp()
    shown["LastModifiedTime"] = bus.updated_at.timestamp()
    return shown


async def create_event_bus(call: Call) -> dict[str, Any]:
    name = call.string("Name", required=True)
    description = call.string("Description")
    if call.params.get("EventSourceName"):
        raise validation("Partner event sources are not supported.")
    try:
        await call.platform.buses.get(call.principal, name)
    except NotFound:
        pass
    else:
        raise AwsError("ResourceAlreadyExistsException", f"Event bus {name} already exists.")
    await call.platform.buses.put(call.principal, name, BusInput(description=description))
    answer: dict[str, Any] = {"EventBusArn": call.arn(f"event-bus/{name}")}
    if description:
        answer["Description"] = description
    return answer


async def delete_event_bus(call: Call) -> dict[str, Any]:
    name = call.string("Name", required=True)
    if name == DEFAULT_BUS:
        raise validation("Cannot delete event bus default.")
    with contextlib.suppress(NotFound):  # as EventBridge: deleting no bus succeeds
        await call.platform.buses.delete(call.principal, name)
    return {}


async def describe_event_bus(call: Call) -> dict[str, Any]:
    name = bus_name(call.string("Name", default=DEFAULT_BUS) or DEFAULT_BUS)
    try:
        bus = await call.platform.buses.get(call.principal, name)
    except NotFound:
        raise not_found(f"Event bus {name} does not exist.") from None
    return _bus_answer(call, bus)


async def list_event_buses(call: Call) -> dict[str, Any]:
    prefix = call.string("NamePrefix")
    buses = [b for b in await call.platform.buses.all(call.principal) if b.name.startswith(prefix)]
    page, token = paginate(call, sorted(buses, key=lambda b: b.name), lambda b: b.name)
    answer: dict[str, Any] = {"EventBuses": [_bus_answer(call, b) for b in page]}
    if token:
        answer["NextToken"] = token
    return answer


def paginate(
    call: Call, items: list[Any], key: Callable[[Any], str], *, limit_name: str = "Limit"
) -> tuple[list[Any], str]:
    """A page of `items` (sorted by `key`) after `NextToken`, at most `Limit` (1-100; or the
    parameter `limit_name`) long, and the token of the next page ('' at the end). The token is
    the last key shown, opaque."""
    limit = call.params.get(limit_name, 100)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 100:
        raise validation(f"{limit_name} must be between 1 and 100.")
    token = call.string("NextToken")
    if token:
        try:
            after = base64.urlsafe_b64decode(token.encode()).decode()
        except ValueError:
            raise validation("The NextToken is not valid.") from None
        items = [item for item in items if key(item) > after]
    page = items[:limit]
    more = len(items) > limit
    return page, base64.urlsafe_b64encode(key(page[-1]).encode()).decode() if more else ""

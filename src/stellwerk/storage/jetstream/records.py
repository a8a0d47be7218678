"""Events as JetStream messages: the body, the headers Stellwerk adds, and the way back.

A stored message's payload is the event's JSON with Stellwerk's extensions (`tenant`, `bus`,
`recordedtime`) appended last, so that they win over copies in the event, exactly as the
SQLite log stores it: a consumer outside Stellwerk can read the stream as CloudEvents. Its
headers are `Nats-Msg-Id` (the dedup key, see `names.message_id`) and `Stellwerk-Meta`, a JSON
array `[id, source, type, subject, recorded_us]` that lets the log answer reads and find
times without parsing bodies; JSON escapes keep any attribute value on one header line.
"""

from __future__ import annotations

from typing import Final

import msgspec
from nats.aio.msg import Msg

from stellwerk.clock import from_us
from stellwerk.events import format_rfc3339
from stellwerk.refs import TenantName
from stellwerk.seams import NewEvent, StoredEvent

MSG_ID: Final = "Nats-Msg-Id"
META: Final = "Stellwerk-Meta"
SEQUENCE: Final = "Nats-Sequence"
NUM_PENDING: Final = "Nats-Num-Pending"

Meta = tuple[str, str, str, str | None, int]
_encode: Final = msgspec.json.Encoder().encode
_decode_meta: Final = msgspec.json.Decoder(Meta).decode


class Stamp:
    """What one append adds to each of its events: the recorded time, as number and text."""

    def __init__(self, recorded_us: int) -> None:
        self.recorded_us = recorded_us
        self.recorded = format_rfc3339(from_us(recorded_us)).encode()

    def body(self, event: NewEvent) -> bytes:
        """The stored JSON: the event with Stellwerk's extensions last, so that they win."""
        return (
            event.body[:-1]
            + b',"tenant":'
            + _encode(event.tenant)
            + b',"bus":'
            + _encode(event.bus)
            + b',"recordedtime":"'
            + self.recorded
            + b'"}'
        )

    def headers(self, event: NewEvent, msg_id: str) -> dict[str, str]:
        meta = (event.id, event.source, event.type, event.subject, self.recorded_us)
        return {MSG_ID: msg_id, META: _encode(meta).decode()}


class NotAnEvent(ValueError):
    """A message on an event subject that Stellwerk did not write (no `Stellwerk-Meta`)."""


def sequence_of(msg: Msg) -> int:
    headers = msg.headers or {}
    return int(headers[SEQUENCE])


def recorded_us_of(msg: Msg) -> int:
    return _meta(msg)[4]


def stored_event(tenant: TenantName, bus: str, msg: Msg) -> StoredEvent:
    """A Direct Get reply as the event it holds."""
    event_id, source, event_type, subject, recorded_us = _meta(msg)
    return StoredEvent(
        tenant,
        bus,
        sequence_of(msg),
        event_id,
        source,
        event_type,
        subject,
        from_us(recorded_us),
        msg.data,
    )


def _meta(msg: Msg) -> Meta:
    raw = msg.headers.get(META) if msg.headers else None
    if raw is None:
        raise NotAnEvent(f"message {msg.headers} has no {META} header")
    meta: Meta = _decode_meta(raw)
    return meta

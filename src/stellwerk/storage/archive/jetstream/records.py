"""What the JetStream archive store keeps: a copies stream and a KV-shaped table.

The copies stream holds every archived copy on its archive's subject, with the log's
`Stellwerk-Meta` header; the table holds each bus's archiver cursor and each archive's `Totals`
(docs/scale-out.md, "Archives on JetStream"). Durable-format rule: new fields get defaults, no
field changes its type.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import ClassVar, Final

import msgspec
from nats.aio.msg import Msg

from stellwerk.clock import from_us, to_us
from stellwerk.refs import BusRef
from stellwerk.seams import ArchivedEvent, StoredEvent
from stellwerk.storage.jetstream import TableLayout, records, token

POSITION: Final = "Stellwerk-Position"
_encode_meta: Final = msgspec.json.Encoder().encode
_decode_meta: Final = msgspec.json.Decoder(records.Meta).decode


class ArchiveCursor(msgspec.Struct, frozen=True):
    position: int


class Totals(msgspec.Struct, frozen=True):
    """An archive's running totals; `upto` only ever grows (trims and erasures keep it)."""

    events: int = 0
    bytes: int = 0
    upto: int = 0


encode: Final = msgspec.json.Encoder().encode
decode_cursor: Final = msgspec.json.Decoder(ArchiveCursor).decode
decode_totals: Final = msgspec.json.Decoder(Totals).decode


@dataclass(frozen=True)
class ArchiveLayout(TableLayout):
    """The names of one installation's archive store (its `namespace`, as the event log's)."""

    TABLE: ClassVar[str] = "archives"

    @property
    def copies_stream(self) -> str:
        return f"{self.namespace}_archived"

    @property
    def copies_subjects(self) -> str:
        return f"{self.namespace}.archived.*"

    def copies_subject(self, uid: str) -> str:
        return f"{self.namespace}.archived.{token(uid)}"

    def cursor_key(self, bus: BusRef) -> str:
        return self.key("cursor", token(bus.tenant), token(bus.bus))

    def totals_key(self, uid: str) -> str:
        return self.key("totals", token(uid))


def copy_msg_id(uid: str, event: StoredEvent) -> str:
    """The `Nats-Msg-Id` of a copy: archive, bus and position (128 bits of BLAKE2b), so a run
    archived again within the duplicate window stores nothing twice."""
    key = f"{len(uid)}:{uid}{len(event.tenant)}:{event.tenant}{len(event.bus)}:{event.bus}"
    raw = hashlib.blake2b(f"{key}{event.position}".encode(), digest_size=16).digest()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def copy_headers(uid: str, event: StoredEvent) -> dict[str, str]:
    meta = (event.id, event.source, event.type, event.subject, to_us(event.recorded_time))
    return {
        records.MSG_ID: copy_msg_id(uid, event),
        records.META: _encode_meta(meta).decode(),
        POSITION: str(event.position),
    }


class Copies:
    """Turns Direct Get replies of one archive into `ArchivedEvent`s (a recorded time shared
    by neighbours, as a log group's is, is converted once)."""

    def __init__(self, uid: str) -> None:
        self._uid = uid
        self._us = -1
        self._time = from_us(0)

    def event(self, msg: Msg) -> ArchivedEvent:
        headers = msg.headers or {}
        event_id, source, event_type, subject, recorded_us = _decode_meta(headers[records.META])
        if recorded_us != self._us:
            self._us, self._time = recorded_us, from_us(recorded_us)
        return ArchivedEvent(
            self._uid,
            int(headers[records.SEQUENCE]),
            int(headers[POSITION]),
            event_id,
            source,
            event_type,
            subject,
            self._time,
            msg.data,
        )

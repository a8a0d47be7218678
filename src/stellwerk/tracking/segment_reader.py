"""The Segment API's messages read for what the collector needs of them, the rest kept as the
bytes they came as (issue 17: `/v1/batch` at 0.8x the rate of CloudEvents batch ingest).

`segment.messages_of` decodes a whole body into Python objects, and the collector encodes each
message again: `properties`, `traits`, `integrations` and members Stellwerk does not know are
decoded and re-encoded without ever being read. Here each message is decoded twice in C, both
cheap: as its members' raw JSON in their order (`dict[str, msgspec.Raw]`, the layout that is
stored), and as a struct of the members Segment's checks, consent and enrichment read (a view:
`properties` and the like are only checked to be objects, `traits` only for `email`). The
stored event is the layout with the members that refine changes replaced (`context`, the
pseudonymised ids, an address), encoded with the raw members spliced in as they came.

A message this reader does not take as its common shape goes the collector's general way
(`check`, `refine`, `tracked`), and so gets exactly the answer it got before: a value of
another type than the view's (an id as a number), a message Segment's checks refuse, a
consent that is no list of purposes, one kept anonymously (no consent), forged members, a
pseudonymised field the view reads. What the reader takes it stores as the general way would,
byte for byte, when the body is compact JSON as msgspec or `JSON.stringify` write it
(`tests/tracking/test_segment_reader.py` proves it for random messages); the raw members keep
the sender's escapes and number spellings (`"\\u00e9"`, `1e2`), equal as JSON. A body with
whitespace between its tokens is compacted first (`msgspec.json.format`), so stored events
stay on one line.
"""

from __future__ import annotations

import uuid
from typing import Any, Final

import msgspec

from stellwerk.events import is_rfc3339
from stellwerk.service import PayloadTooLarge
from stellwerk.tracking.collector import DROPPED, Arrival, Dropped, Ready, tracked
from stellwerk.tracking.consent import TCF_COOKIE
from stellwerk.tracking.enrich import anonymise_ip, pseudonym, pseudonymise
from stellwerk.tracking.model import Binding
from stellwerk.tracking.refine import (
    MAX_VISIT_PURPOSES,
    MEMBER,
    Refiner,
    epoch,
    sender_of,
    stored_member,
    user_data,
    visit_key,
)
from stellwerk.tracking.segment import MAX_ID_LENGTH, TYPES, messages_of

_FORGED_TOP: Final = "context." + MEMBER
_FORGED_INNER: Final = MEMBER + "."
_NO_CONSENT: Final = (object(),)


class _Object(msgspec.Struct, gc=False):
    """Any JSON object; its members are skipped, not decoded."""


class _Traits(msgspec.Struct, gc=False):
    email: object = None


class _Page(msgspec.Struct, gc=False):
    url: str | None = None
    referrer: str | None = None


class _Consent(msgspec.Struct, gc=False):
    purposes: list[str] | None = None


class _Context(msgspec.Struct, gc=False):
    ip: str | None = None
    userAgent: str | None = None
    page: _Page | None = None
    consent: _Consent | None = None
    traits: _Traits | None = None


class _Message(msgspec.Struct, gc=False):
    """What Segment's checks, consent and enrichment read of a message."""

    type: object = None
    messageId: str | None = None
    userId: str | None = None
    anonymousId: str | None = None
    previousId: str | None = None
    groupId: str | None = None
    event: str | None = None
    name: str | None = None
    category: str | None = None
    timestamp: str | None = None
    originalTimestamp: str | None = None
    sentAt: str | None = None
    ip: str | None = None
    gdpr_consent: object = None  # the IAB's parameter, which consent reads
    properties: _Object | None = None
    integrations: _Object | None = None
    traits: _Traits | None = None
    context: _Context | None = None


_NULL: Final = msgspec.Raw(b"null")


class _Batch(msgspec.Struct, gc=False):
    """A `/v1/batch` body: its messages as they came, and the members they share."""

    batch: list[msgspec.Raw]
    # A null is as good as none (msgspec takes no `Raw | None`).
    context: msgspec.Raw = _NULL
    integrations: msgspec.Raw = _NULL
    sentAt: msgspec.Raw = _NULL
    writeKey: object = None


class _Single(msgspec.Struct, gc=False):
    writeKey: object = None


_batch: Final = msgspec.json.Decoder(_Batch).decode
_single: Final = msgspec.json.Decoder(_Single).decode
_layout: Final = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode
_view: Final = msgspec.json.Decoder(_Message).decode
_context_view: Final = msgspec.json.Decoder(_Context).decode
_object: Final = msgspec.json.Decoder(_Object).decode
_text: Final = msgspec.json.Decoder(str).decode
_any: Final = msgspec.json.decode
_encode: Final = msgspec.json.Encoder().encode

# Members of a message the view reads as more than an object: a pseudonymised one (but the
# ids, and paths into `context.traits`) leaves the message to the general way.
_VIEWED: Final = frozenset(_Message.__struct_fields__) - {"properties", "integrations", "traits"}


def _compact(content: bytes) -> bytes:
    """The body without whitespace between tokens, when it may have some: a raw `\\n`, `\\r`
    or `\\t` is never inside a JSON string, and `": ` only as an escaped quote's."""
    if b'": ' in content or b"\n" in content or b"\r" in content or b"\t" in content:
        return msgspec.json.format(content, indent=-1)
    return content


class Body:
    """A Segment API body as this reader takes it: `read`, then `messages`."""

    def __init__(
        self,
        content: bytes,
        kind: str | None,
        raws: list[msgspec.Raw],
        shared: list[tuple[str, msgspec.Raw]],
        shared_context: _Context | None,
        write_key: object,
    ) -> None:
        self._content = content
        self._kind = kind
        self._raws = raws
        self._shared = shared
        self._shared_context = shared_context
        self.write_key = write_key
        self._general: list[Any] | None = None

    def key_holder(self) -> dict[str, Any]:
        """What the write key's reader takes of the body (`routes_segment.write_key_of`)."""
        return {"writeKey": self.write_key}

    def messages(
        self, refiner: Refiner, arrival: Arrival, binding: Binding, *, max_batch: int
    ) -> list[Any]:
        """The body's messages for `Collector.collect`: each `Ready`, `DROPPED`, or as
        `segment.messages_of` gives it (for the general way); its errors for the body."""
        raws = self._raws
        if self._kind is None and len(raws) > max_batch:
            raise PayloadTooLarge(
                f"the batch holds {len(raws)} messages; the limit is {max_batch}",
                code="BatchTooLarge",
                field="batch",
            )
        taker = _Taker(refiner, arrival, binding)
        items: list[Any] = []
        for index, raw in enumerate(raws):
            item: Ready | Dropped | None = None
            try:
                layout = _layout(raw)
                view = _view(raw)
            except msgspec.DecodeError:
                pass  # not an object, or not of the view's types
            else:
                item = taker.take(layout, view, self._kind, self._shared, self._shared_context)
            items.append(self._general_message(index) if item is None else item)
        return items

    def _general_message(self, index: int) -> Any:
        """The message at `index` as `messages_of` makes it of the whole body."""
        if self._general is None:
            body = _any(self._content)
            self._general = messages_of(body, self._kind, max_batch=len(self._raws))
        return self._general[index]


def read(content: bytes, kind: str | None) -> Body | None:
    """The body (JSON, decompressed) as this reader takes it, or None for the general way:
    not JSON, no object, or shared members of another type than a message's own."""
    try:
        content = _compact(content)
        if kind is not None:
            return Body(content, kind, [msgspec.Raw(content)], [], None, _single(content).writeKey)
        batch = _batch(content)
        shared: list[tuple[str, msgspec.Raw]] = []
        shared_context: _Context | None = None
        if batch.context != _NULL:
            shared_context = _context_view(batch.context)
            shared.append(("context", batch.context))
        if batch.integrations != _NULL:
            _object(batch.integrations)
            shared.append(("integrations", batch.integrations))
        if batch.sentAt != _NULL:
            _text(batch.sentAt)
            shared.append(("sentAt", batch.sentAt))
    except msgspec.DecodeError:
        return None
    return Body(content, None, batch.batch, shared, shared_context, batch.writeKey)


class _Taker:
    """One request's messages, taken by the view: what `check`, `refine` and `tracked` make of
    them, or None for the general way."""

    def __init__(self, refiner: Refiner, arrival: Arrival, binding: Binding) -> None:
        self.refiner = refiner
        self.arrival = arrival
        self.binding = binding
        self.source = binding.source
        _, self.privacy, _ = refiner.settings(binding)
        self.pseudonymised = [(path, path.split(".")) for path in self.privacy.pseudonymise]
        self.tenant_key = refiner.tenant_key(binding.tenant.id) if self.pseudonymised else b""
        # With a TCF cookie, a message that states no consent has the cookie's.
        self.tcf_cookie = TCF_COOKIE in arrival.headers.get("cookie", "")

    def take(
        self,
        layout: dict[str, Any],
        view: _Message,
        kind: str | None,
        shared: list[tuple[str, msgspec.Raw]],
        shared_context: _Context | None,
    ) -> Ready | Dropped | None:
        # `messages_of`: the write key out, the endpoint's type in, the batch's shared members
        # into each message that has none.
        layout.pop("writeKey", None)
        if kind is None:
            kind = view.type if isinstance(view.type, str) else None
        else:
            layout["type"] = kind
        context = view.context
        for name, value in shared:
            if getattr(view, name) is None:
                layout[name] = value
                if name == "context":
                    context = shared_context
        # `check`, for the messages it takes.
        if kind not in TYPES:
            return None
        message_id, user, anonymous = view.messageId, view.userId, view.anonymousId
        if message_id is not None and not 0 < len(message_id) <= MAX_ID_LENGTH:
            return None
        if user == "" or anonymous == "" or (user is None and anonymous is None):
            return None
        if kind == "track":
            if not view.event:
                return None
        elif kind == "group":
            if not view.groupId:
                return None
        elif kind == "alias" and not (view.previousId and user):
            return None
        # `refine`: no forged members, the visit's decision and enrichment.
        if _FORGED_TOP in "\0".join(layout):
            return None
        inner: dict[str, Any] = {}
        if context is not None:
            inner = _layout(layout["context"])
            if _FORGED_INNER in "\0".join(inner):
                return None
            page, consent = context.page, context.consent
        else:
            page = consent = None
        if consent is not None:
            listed: list[str] | None = consent.purposes
            if listed is None or len(listed) > MAX_VISIT_PURPOSES:
                return None  # Segment's categoryPreferences, a TCF string, many purposes
        elif view.gdpr_consent is not None or self.tcf_cookie:
            return None
        else:
            listed = None  # no consent stated at all
        arrival = self.arrival
        sender = sender_of(
            context.ip if context is not None else None,
            context.userAgent if context is not None else None,
            page.url if page is not None else None,
            page.referrer if page is not None else None,
            arrival,
            "segment",
        )
        key = visit_key(listed if listed is not None else (), sender, id(self.binding))
        if key is None:
            return None
        if listed is None:
            # Not the key of an empty list of purposes, which is another consent; the general
            # way's keys hold only strings after the binding.
            key += _NO_CONSENT
        visit = self.refiner.visit(key, sender, listed, self.binding)
        enrichment = visit.enrichment
        if enrichment is None:
            return DROPPED
        if visit.anonymous:
            return None
        # Pseudonyms, on the members (and the traits) that hold the fields.
        traits: Any = view.traits
        inner_traits: Any = context.traits if context is not None else None
        for path, parts in self.pseudonymised:
            head = parts[0]
            if head == "userId" and len(parts) == 1:
                if user is not None:  # a null is left as it is, as the general way leaves it
                    user = layout[head] = pseudonym(self.tenant_key, user)
            elif head == "anonymousId" and len(parts) == 1:
                if anonymous is not None:
                    anonymous = layout[head] = pseudonym(self.tenant_key, anonymous)
            elif head == "context" and len(parts) > 2 and parts[1] == "traits":
                if "traits" in inner:
                    value = _any(inner["traits"])
                    rest = (path.split(".", 2)[2],)
                    changed = (
                        pseudonymise(value, rest, self.tenant_key)
                        if isinstance(value, dict)
                        else value
                    )
                    if changed is not value:
                        inner["traits"] = inner_traits = changed
            elif head in _VIEWED:
                return None
            elif head in layout:
                value = _any(layout[head])
                changed = pseudonymise({head: value}, (path,), self.tenant_key)[head]
                if changed is not value:
                    layout[head] = changed
                    if head == "traits":
                        traits = changed
        if traits is not None:
            email = traits.get("email") if isinstance(traits, dict) else traits.email
        elif inner_traits is not None:
            email = (
                inner_traits.get("email") if isinstance(inner_traits, dict) else inner_traits.email
            )
        else:
            email = None
        if not self.privacy.keep_full_ip:
            if context is not None and context.ip is not None:
                inner["ip"] = (
                    enrichment.ip if context.ip == sender[0] else anonymise_ip(context.ip)[0]
                )
            if view.ip is not None:
                layout["ip"] = anonymise_ip(view.ip)[0]
        timestamp = view.timestamp
        found = user_data(email, user, enrichment.ip, sender[1])
        inner[MEMBER] = stored_member(
            visit, arrival.received_at, epoch(timestamp, arrival.received_at), found
        )
        layout["context"] = inner
        event_id = message_id or str(uuid.uuid4())
        event_type = "segment." + kind
        subject = user or anonymous
        time = timestamp if timestamp is not None and is_rfc3339(timestamp) else None
        encoded = _encode(tracked(event_id, self.source, event_type, subject, time, layout))
        return Ready(encoded, event_id, event_type, subject, message_id)

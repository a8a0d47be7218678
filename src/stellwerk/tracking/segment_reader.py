"""The Segment API's messages read for what the collector needs of them, the rest kept as the
bytes they came as (issue 17: `/v1/batch` at 0.8x the rate of CloudEvents batch ingest).

`segment.messages_of` decodes a whole body into Python objects, and the collector encodes each
message again: `properties`, `traits`, `integrations` and members Stellwerk does not know are
decoded and re-encoded without ever being read. Here a batch is decoded twice in C, both
cheap: its messages as their members' raw JSON in their order (`dict[str, msgspec.Raw]`, the
layout that is stored), and as structs of the members Segment's checks, consent and enrichment
read (views: `properties` and the like are only checked to be objects, `traits` only for
`email`); a batch with a message of another shape is decoded message by message. The stored
event is the layout with the members that refine changes replaced (`context`, the
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

A batch's common case is read by the C reader (`_segment_native`, `native`) when it is built;
this module is its fallback and its oracle. What it keeps between requests is in
`segment_kept`, the times in `segment_times`.
"""

from __future__ import annotations

import os
import re
import sys
import uuid
from typing import Any, Final

import msgspec

from stellwerk.events import MAX_EVENT_SIZE
from stellwerk.ingest import DecodedEvent
from stellwerk.service import PayloadTooLarge
from stellwerk.tracking.bodies import json_of
from stellwerk.tracking.collector import DROPPED, Arrival, Dropped, Events, Ready, tracked
from stellwerk.tracking.consent import TCF_COOKIE
from stellwerk.tracking.enrich import anonymise_ip, pseudonym, pseudonymise
from stellwerk.tracking.model import Binding
from stellwerk.tracking.refine import (
    MAX_VISIT_PURPOSES,
    MEMBER,
    Refiner,
    epoch,
    sender_data,
    sender_of,
    user_data,
    visit_key,
)
from stellwerk.tracking.segment import MAX_ID_LENGTH, TYPES, messages_of
from stellwerk.tracking.segment_kept import (
    DROP,
    LEAVE,
    LEFT,
    TAKE,
    Seen,
    contexts_of,
    email_part,
)
from stellwerk.tracking.segment_times import HEADS, TAILS, times

_built: bool
try:
    from stellwerk.tracking import _segment_native

    _built = True
except ImportError:  # not built (no C compiler at install, or a source tree without it)
    _segment_native = None  # type: ignore[assignment]
    _built = False

# The C reader of a batch's common case (`_segment_native.c`), None for this module's alone:
# STELLWERK_SEGMENT_NATIVE=0 (debugging; tests set this attribute to compare both).
native: Any = None if os.environ.get("STELLWERK_SEGMENT_NATIVE") == "0" else _segment_native


def why_in_python() -> str | None:
    """Why batches are read by this module's Python alone, for the start's log; None when the
    C reader takes them."""
    if native is not None:
        return None
    if not _built:
        return "the C reader is not built (no C compiler at install: docs/tracking.md)"
    return "STELLWERK_SEGMENT_NATIVE=0"


_FORGED_TOP: Final = "context." + MEMBER
_FORGED_INNER: Final = MEMBER + "."
_FORGED_BYTES: Final = _FORGED_TOP.encode()
_NO_CONSENT: Final = (object(),)


_NULL: Final = msgspec.Raw(b"null")


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
    # Read by what it decides (`Seen`): the same bytes, the same context.
    context: msgspec.Raw = _NULL


class _Batch(msgspec.Struct, gc=False):
    """A `/v1/batch` body: its messages as they came, and the members they share."""

    batch: list[msgspec.Raw]
    # A null is as good as none (msgspec takes no `Raw | None`).
    context: msgspec.Raw = _NULL
    integrations: msgspec.Raw = _NULL
    sentAt: msgspec.Raw = _NULL
    writeKey: object = None


class _Views(msgspec.Struct, gc=False):
    """A `/v1/batch` body whose every message is of the view's types, viewed in one call."""

    batch: list[_Message]
    context: msgspec.Raw = _NULL
    integrations: msgspec.Raw = _NULL
    sentAt: msgspec.Raw = _NULL
    writeKey: object = None


class _Layouts(msgspec.Struct, gc=False):
    """A `/v1/batch` body's messages as their members' raw JSON, in one call."""

    batch: list[dict[str, msgspec.Raw]]


class _Single(msgspec.Struct, gc=False):
    writeKey: object = None


_batch: Final = msgspec.json.Decoder(_Batch).decode
_views: Final = msgspec.json.Decoder(_Views).decode
_layouts: Final = msgspec.json.Decoder(_Layouts).decode
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
_IDS: Final = frozenset({"userId", "anonymousId"})
_USER_DATA: Final = b',"user_data":{'  # as `user_data_part` opens it
_EVENT_TYPES: Final = {kind: "segment." + kind for kind in TYPES}
_TRAITS: Final = ["context", "traits"]


def _compact(content: bytes) -> bytes:
    """The body without whitespace between tokens, when it may have some: a raw `\\n`, `\\r`
    or `\\t` is never inside a JSON string, and a serializer that puts spaces after separators
    (Python's `json`, as the SDKs send) shows them in the first members (`": `, `, "` are
    there only as an escaped quote's otherwise). A body that is compact at its start but not
    further on is stored with its spaces: equal as JSON, on one line still."""
    start = content[:_LOOK]
    if (
        b'": ' in start
        or b', "' in start
        or b"\n" in content
        or b"\r" in content
        or b"\t" in content
    ):
        return msgspec.json.format(content, indent=-1)
    return content


_LOOK: Final = 2_048

# What a number too large for a float needs (msgspec refuses it, `Number out of range`, as
# the general way does): an exponent of three digits, or 200 digits before it (at most 99).
_MAYBE_OUT_OF_RANGE: Final = re.compile(rb"[eE][+-]?[0-9]{3}|[0-9]{200}")


def _decodable(content: bytes) -> bool:
    """Whether the body decodes as a whole, as the general way decodes it (else it answers
    400): the members kept raw are never decoded here, and msgspec skips them unchecked, so
    a raw member of invalid UTF-8 or a number out of range would be stored, or fail the
    decoding of the layouts (a 500)."""
    if not content.isascii():
        try:
            content.decode()
        except UnicodeDecodeError:
            return False
    if _MAYBE_OUT_OF_RANGE.search(content) is None:
        return True
    try:
        _any(content)
    except msgspec.DecodeError:
        return False
    return True


class Body:
    """A Segment API body as this reader takes it: `read`, then `messages`. `views`: every
    message viewed already (the body decoded whole for it, the common body), else None and
    each of `raws` is decoded by itself."""

    def __init__(
        self,
        content: bytes,
        kind: str | None,
        raws: list[msgspec.Raw] | None,
        views: list[_Message] | None,
        shared: list[tuple[str, msgspec.Raw]],
        write_key: object,
        layout: bytes | None = None,
    ) -> None:
        self._content = content
        self._layout = layout
        self._kind = kind
        self._raws = raws
        self._views = views
        self._shared = shared
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
        if self._layout is not None:
            return self._native_messages(self._layout, refiner, arrival, binding, max_batch)
        views: list[_Message | None]
        layouts: list[dict[str, Any] | None]
        if self._views is not None:
            views = list(self._views)
            count = len(views)
        else:
            assert self._raws is not None
            count = len(self._raws)
        if self._kind is None and count > max_batch:
            raise PayloadTooLarge(
                f"the batch holds {count} messages; the limit is {max_batch}",
                code="BatchTooLarge",
                field="batch",
            )
        if self._views is not None:
            if self._kind is None:
                layouts = list(_layouts(self._content).batch)
            else:
                layouts = [_layout(self._content)]
        else:
            assert self._raws is not None
            views, layouts = [], []
            for raw in self._raws:
                try:
                    layout, view = _layout(raw), _view(raw)
                except msgspec.DecodeError:  # not an object, or not of the view's types
                    layout, view = None, None
                layouts.append(layout)
                views.append(view)
        # A member named with `context.stellwerk` needs the name in the body, or an escape
        # (a backslash looked for first: one byte is a memchr, `\u` a scan of ~1 ns a byte).
        content = self._content
        forged = _FORGED_BYTES in content or (b"\\" in content and b"\\u" in content)
        taker = _Taker(refiner, arrival, binding)
        taken = taker.take_all(layouts, views, self._kind, self._shared, forged)
        return [
            self._general_message(index) if item is None else item
            for index, item in enumerate(taken)
        ]

    def _native_messages(
        self, layout: bytes, refiner: Refiner, arrival: Arrival, binding: Binding, max_batch: int
    ) -> list[Any]:
        """`messages` by the C reader (`native.scan` gave `layout`): the messages it leaves
        (None) are taken by this module's reader, of the whole body."""
        count = int.from_bytes(layout[:4], sys.byteorder)
        if count > max_batch:
            raise PayloadTooLarge(
                f"the batch holds {count} messages; the limit is {max_batch}",
                code="BatchTooLarge",
                field="batch",
            )
        taker = _Taker(refiner, arrival, binding)
        if taker.leave_all or not taker.ids_only:
            return self._python_messages(refiner, arrival, binding, max_batch)
        taken = taker.take_native(self._content, layout)
        if type(taken) is Events or None not in taken:
            return taken
        python = self._python_messages(refiner, arrival, binding, max_batch)
        return [python[index] if item is None else item for index, item in enumerate(taken)]

    def _python_messages(
        self, refiner: Refiner, arrival: Arrival, binding: Binding, max_batch: int
    ) -> list[Any]:
        """`messages` by this module's reader, which reads every body `native.scan` takes
        (else, to be safe, every message the general way)."""
        body = _read(self._content, self._kind)
        if body is None:
            return messages_of(json_of(self._content), self._kind, max_batch=max_batch)
        return body.messages(refiner, arrival, binding, max_batch=max_batch)

    def _general_message(self, index: int) -> Any:
        """The message at `index` as `messages_of` makes it of the whole body."""
        if self._general is None:
            body = json_of(self._content)  # `read` took only bodies it decodes
            count = len(self._views) if self._views is not None else len(self._raws or ())
            self._general = messages_of(body, self._kind, max_batch=count)
        return self._general[index]


def read(content: bytes, kind: str | None) -> Body | None:
    """The body (JSON, decompressed) as this reader takes it, or None for the general way:
    not JSON, no object, or shared members of another type than a message's own."""
    if kind is None and native is not None:
        try:
            compact = _compact(content)
        except msgspec.DecodeError:
            return None
        scanned = native.scan(compact)
        if scanned is not None:
            layout, write_key = scanned
            return Body(compact, None, None, None, [], write_key, layout)
        content = compact
    return _read(content, kind)


def _read(content: bytes, kind: str | None) -> Body | None:
    """`read` by this module alone."""
    try:
        content = _compact(content)
        if not _decodable(content):
            return None
        if kind is not None:
            write_key = _single(content).writeKey
            try:
                return Body(content, kind, None, [_view(content)], [], write_key)
            except msgspec.DecodeError:
                return Body(content, kind, [msgspec.Raw(content)], None, [], write_key)
        batch: _Views | _Batch
        try:
            batch = _views(content)
        except msgspec.DecodeError:  # a message of another shape: each decoded by itself
            batch = _batch(content)
        shared: list[tuple[str, msgspec.Raw]] = []
        if batch.context != _NULL:
            _object(batch.context)
            shared.append(("context", batch.context))
        if batch.integrations != _NULL:
            _object(batch.integrations)
            shared.append(("integrations", batch.integrations))
        if batch.sentAt != _NULL:
            _text(batch.sentAt)
            shared.append(("sentAt", batch.sentAt))
    except msgspec.DecodeError:
        return None
    if isinstance(batch, _Views):
        return Body(content, None, None, batch.batch, shared, batch.writeKey)
    return Body(content, None, batch.batch, None, shared, batch.writeKey)


_PLACEHOLDER: Final = msgspec.Raw(b"0")
_MEMBER_BYTES: Final = MEMBER.encode()


class _Taker:
    """One request's messages, taken by the view: what `check`, `refine` and `tracked` make of
    them, or None for the general way."""

    def __init__(self, refiner: Refiner, arrival: Arrival, binding: Binding) -> None:
        self.refiner = refiner
        self.arrival = arrival
        self.binding = binding
        self.source = binding.source
        self.canonical, _, self.privacy, _ = refiner.settings(binding)
        self.generation = refiner.generation
        paths = [(path, path.split(".")) for path in self.privacy.pseudonymise]
        self.context_paths = [
            (path, parts) for path, parts in paths if len(parts) > 2 and parts[:2] == _TRAITS
        ]
        self.paths = [(path, parts) for path, parts in paths if parts[0] != "context"]
        # The common setting, the ids alone (each once): no loop over paths per message.
        names = [path for path, _ in self.paths]
        self.ids_only = set(names) <= _IDS and len(set(names)) == len(names)
        self.user_path = "userId" in names
        self.anonymous_path = "anonymousId" in names
        # A pseudonymised member the view reads (but the ids; paths into `context.traits`
        # are the context's): every message of the source goes the general way.
        self.leave_all = any(
            parts[0] in _VIEWED and not (len(parts) == 1 and parts[0] in _IDS)
            for _, parts in paths
            if parts[:2] != _TRAITS or len(parts) < 3
        )
        self.tenant_key = refiner.tenant_key(binding.tenant.id) if paths else b""
        self.contexts = contexts = contexts_of(refiner)
        self.pseudonyms = contexts.pseudonyms_of(self.tenant_key)
        self.externals = contexts.externals
        # With a TCF cookie, a message that states no consent has the cookie's.
        self.tcf_cookie = TCF_COOKIE in arrival.headers.get("cookie", "")
        headers = arrival.headers
        sender = (
            arrival.ip,
            arrival.user_agent,
            bool(arrival.origin),
            arrival.referrer,
            headers.get("user-agent"),
            self.tcf_cookie,
        )
        # By the binding's identity: an entry with a visit is checked against it; one without
        # (left to the general way, for reasons of the context and the source's settings)
        # could at worst meet a later binding given the same id, and leave its messages to
        # the general way, which is never wrong.
        self.seen = contexts.of((id(self.canonical), *sender))
        self.received_at = arrival.received_at
        # `context.stellwerk`'s own part up to the event's time, as `stored_member` writes it.
        self.own = b'"received_at":' + _encode(arrival.received_at) + b',"event_time":'

    def _context(self, text: bytes) -> Seen:
        """What a context (its JSON; empty: none) decides (`Seen`), worked out."""
        raw = msgspec.Raw(text) if text else None
        inner: dict[str, Any] = {}
        context: _Context | None = None
        if raw is not None:
            try:
                context = _context_view(raw)
            except msgspec.DecodeError:
                return LEFT  # no object, or not of the view's types
            inner = _layout(raw)
            # A name with `stellwerk` in it needs the word in the bytes, or an escape.
            if (_MEMBER_BYTES in text or b"\\u" in text) and (
                _FORGED_INNER in "\0".join(inner) or MEMBER in inner
            ):
                return LEFT  # forged members, or a member of the name the collector sets
        page = context.page if context is not None else None
        consent = context.consent if context is not None else None
        if consent is not None:
            listed: list[str] | None = consent.purposes
            if listed is None or len(listed) > MAX_VISIT_PURPOSES:
                return LEFT  # Segment's categoryPreferences, a TCF string, many purposes
        elif self.tcf_cookie:
            return LEFT
        else:
            listed = None  # no consent stated at all
        sender = sender_of(
            context.ip if context is not None else None,
            context.userAgent if context is not None else None,
            page.url if page is not None else None,
            page.referrer if page is not None else None,
            self.arrival,
            "segment",
        )
        key = visit_key(listed if listed is not None else (), sender, id(self.canonical))
        if key is None:
            return LEFT  # long values: the general way works them out each time
        if listed is None:
            # Not the key of an empty list of purposes, which is another consent; the general
            # way's keys hold only strings after the binding.
            key += _NO_CONSENT
        visit = self.refiner.visit(key, sender, listed, self.binding)
        enrichment = visit.enrichment
        if enrichment is None:
            return Seen(DROP, visit)
        if visit.anonymous:
            return Seen(LEAVE, visit)
        traits: Any = context.traits if context is not None else None
        for path, _ in self.context_paths:
            if "traits" in inner:
                value = _any(inner["traits"])
                rest = (path.split(".", 2)[2],)
                if isinstance(value, dict):
                    changed = pseudonymise(value, rest, self.tenant_key)
                    if changed is not value:
                        inner["traits"] = traits = changed
        email = traits.get("email") if isinstance(traits, dict) else getattr(traits, "email", None)
        if not self.privacy.keep_full_ip and context is not None and context.ip is not None:
            inner["ip"] = enrichment.ip if context.ip == sender[0] else anonymise_ip(context.ip)[0]
        inner[MEMBER] = _PLACEHOLDER  # the last member: `"stellwerk":0}` cut off
        prefix = b"".join((memoryview(_encode(inner))[:-2], visit.encoded))
        tail = sender_data(enrichment.ip, sender[1])
        after = b"," + tail + b"}}}" if tail else b"}}}"
        alone = _USER_DATA + tail + b"}}}" if tail else b"}}"
        return Seen(TAKE, visit, prefix, after, alone, email, listed is None)

    def _resolve(self, text: bytes) -> Seen:
        """What a context (its JSON; empty: none) decides, worked out and kept: the C
        reader's miss."""
        found = self._context(text)
        self.contexts.kept(self.seen, text, found)
        return found

    def take_native(self, content: bytes, layout: bytes) -> list[DecodedEvent | Dropped | None]:
        """`take_all` by the C reader, of the messages `native.scan` found in `content`:
        the pseudonyms of the ids only (`ids_only`), never `leave_all`. Each message's
        `DecodedEvent` (numbered among them), `DROPPED` or None; an `Events` list when every
        message is an event."""
        taken: list[DecodedEvent | Dropped | None] = native.take(
            content,
            layout,
            self.seen,
            id(self.canonical),
            self.generation,
            self._resolve,
            self.pseudonyms,
            self._pseudonym,
            self.user_path,
            self.anonymous_path,
            self.externals,
            self._external,
            self.own,
            epoch(None, self.received_at),
            self.privacy.keep_full_ip,
            _encode(self.source),
            self.source,
            DecodedEvent,
            Events,
            MAX_EVENT_SIZE,
            DROPPED,
            email_part,
        )
        return taken

    def _pseudonym(self, text: str) -> str:
        """`enrich.pseudonym` under the tenant's key, kept by the text."""
        found = self.pseudonyms.get(text)
        if found is None:
            found = pseudonym(self.tenant_key, text)
            self.contexts.kept_pseudonym(self.pseudonyms, text, found)
        return found

    def take_all(
        self,
        layouts: list[dict[str, Any] | None],
        views: list[_Message | None],
        kind: str | None,
        shared: list[tuple[str, msgspec.Raw]],
        forged: bool,
    ) -> list[Ready | Dropped | None]:
        """Each message (its layout and view; None for one that is neither) taken, in one pass
        over them in the order of the general way; None for one left to the general way.
        `forged`: whether a member's name may hold `context.stellwerk` (the body does)."""
        if self.leave_all:
            return [None] * len(views)
        # What each message reads of the request, as locals: a message costs a few µs here.
        seen_of, canonical, generation = self.seen, self.canonical, self.generation
        paths, keep_full_ip, received_at = self.paths, self.privacy.keep_full_ip, self.received_at
        externals, own, source = self.externals, self.own, self.source
        pseudonyms, ids_only = self.pseudonyms, self.ids_only
        heads, tails = HEADS, TAILS
        user_path, anonymous_path = self.user_path, self.anonymous_path
        single = kind
        last_context: msgspec.Raw | None = None
        last_seen = LEFT
        taken: list[Ready | Dropped | None] = []
        for layout, view in zip(layouts, views, strict=True):
            if layout is None or view is None:
                taken.append(None)
                continue
            # `messages_of`: the write key out, the endpoint's type in, the batch's shared
            # members into each message that has none.
            layout.pop("writeKey", None)
            if single is None:
                kind = view.type if isinstance(view.type, str) else None
            else:
                layout["type"] = kind
            context = view.context
            for name, value in shared:
                if getattr(view, name) in (None, _NULL):
                    layout[name] = value
                    if name == "context":
                        context = value
            # `check`, for the messages it takes.
            message_id, user, anonymous = view.messageId, view.userId, view.anonymousId
            if (
                kind not in TYPES
                or (message_id is not None and not 0 < len(message_id) <= MAX_ID_LENGTH)
                or user == ""
                or anonymous == ""
                or (user is None and anonymous is None)
                or (kind == "track" and not view.event)
                or (kind == "group" and not view.groupId)
                or (kind == "alias" and not (view.previousId and user))
                # `refine`: no forged members.
                or (forged and _FORGED_TOP in "\0".join(layout))
            ):
                taken.append(None)
                continue
            # The visit's decision and enrichment, by the context: the previous message's
            # again when the same (one device's batch), compared without copying or hashing.
            if context == last_context:
                seen = last_seen
            else:
                text = b"" if context == _NULL else bytes(context)
                found = seen_of.get(text)
                visit = None if found is None else found.visit
                if found is None or (
                    visit is not None
                    and (visit.binding is not canonical or visit.generation != generation)
                ):
                    found = self._context(text)
                    self.contexts.kept(seen_of, text, found)
                seen = last_seen = found
                last_context = context
            if seen.outcome != TAKE:
                taken.append(DROPPED if seen.outcome == DROP else None)
                continue
            if seen.no_consent and view.gdpr_consent is not None:
                taken.append(None)
                continue
            # Pseudonyms, on the members (and the traits) that hold the fields.
            traits: Any = view.traits
            if ids_only:
                # a null is left as it is, as the general way leaves it
                if user_path and user is not None:
                    user = layout["userId"] = pseudonyms.get(user) or self._pseudonym(user)
                if anonymous_path and anonymous is not None:
                    anonymous = layout["anonymousId"] = pseudonyms.get(
                        anonymous
                    ) or self._pseudonym(anonymous)
            else:
                for path, parts in paths:
                    head = parts[0]
                    if len(parts) == 1 and head == "userId":
                        if user is not None:
                            user = layout[head] = self._pseudonym(user)
                    elif len(parts) == 1 and head == "anonymousId":
                        if anonymous is not None:
                            anonymous = layout[head] = self._pseudonym(anonymous)
                    elif head in layout:
                        value = _any(layout[head])
                        changed = pseudonymise({head: value}, (path,), self.tenant_key)[head]
                        if changed is not value:
                            layout[head] = changed
                            if head == "traits":
                                traits = changed
            if traits is None:
                email = seen.email
            else:
                email = traits.get("email") if isinstance(traits, dict) else traits.email
            if view.ip is not None and not keep_full_ip:
                layout["ip"] = anonymise_ip(view.ip)[0]
            timestamp = view.timestamp
            second = None if timestamp is None else heads.get(timestamp[:19])
            offset = None if second is None or timestamp is None else tails.get(timestamp[19:])
            if second is not None and offset is not None:  # `times`, by its kept halves
                time, event_time = timestamp, second - offset
            else:
                time, event_time = times(timestamp, received_at)
            # `user_data` (`refine.user_data`, as `user_data_part` encodes it): the e-mail's
            # member, the user id's, the sender's (`after`, with the closing braces).
            if isinstance(email, str) and email.strip():
                opened = _USER_DATA + b'"em":' + _encode(user_data(email, None, "", "")["em"])
                if user:
                    external = externals.get(user) or self._external(user)
                    opened += b"," + external[len(_USER_DATA) :]
                after = seen.after
            elif user:  # a string: the view's type
                opened, after = externals.get(user) or self._external(user), seen.after
            else:
                opened, after = b"", seen.alone
            layout["context"] = msgspec.Raw(
                b"".join((seen.prefix, own, str(event_time).encode(), opened, after))
            )
            event_id = message_id or str(uuid.uuid4())
            event_type = _EVENT_TYPES[kind]
            subject = user or anonymous
            encoded = _encode(tracked(event_id, source, event_type, subject, time, layout))
            taken.append(Ready(encoded, event_id, event_type, subject, message_id))
        return taken

    def _external(self, user: str) -> bytes:
        """`user_data` opened with the `external_id` member of a user id
        (`,"user_data":{"external_id":[...]`), kept by the id."""
        external = (
            _USER_DATA + b'"external_id":' + _encode(user_data(None, user, "", "")["external_id"])
        )
        self.contexts.kept_external(user, external)
        return external

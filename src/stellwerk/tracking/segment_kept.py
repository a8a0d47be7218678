"""What the Segment reader keeps between requests: each context's decision (`Seen`) by its
bytes, per source and request sender, and the ids' pseudonyms and `user_data` openings by the
id. A visitor's events repeat their context and ids; all of it is bounded and cleared, not
evicted, when full."""

from __future__ import annotations

from typing import Final

import msgspec

from stellwerk.tracking.refine import Refiner, Visit, user_data

_encode: Final = msgspec.json.Encoder().encode


def email_part(email: object) -> bytes:
    """`user_data`'s `em` member of an e-mail address (`"em":[...]`), as `user_data_part`
    encodes it, or empty for none (no text, or blanks)."""
    if isinstance(email, str) and email.strip():
        return b'"em":' + _encode(user_data(email, None, "", "")["em"])
    return b""


class Seen(msgspec.Struct, gc=False):
    """What a message's `context` (its JSON, the same bytes) decides under one source and
    request sender: the visit, and for a message to store, the stored context up to its
    event's own part of `context.stellwerk` (`prefix`), how it ends after a user's members
    of `user_data` (`after`: the sender's members, the enriched address and the agent, as
    `user_data` encodes them, and the closing braces) or without them (`alone`), and the
    e-mail address of `context.traits` (pseudonymised if the source says)."""

    outcome: int  # TAKE, DROP or LEAVE
    visit: Visit | None
    prefix: bytes = b""
    after: bytes = b""
    alone: bytes = b""
    email: object = None
    no_consent: bool = False  # states none: `gdpr_consent` would decide
    # The same for the C reader, read as one tuple rather than attribute by attribute:
    # outcome, prefix, after, alone, `email`'s `em` member (`email_part`), no_consent, and
    # the visit's binding's id and generation (None without a visit). The id stands for the
    # binding itself: the visit held here keeps it alive, so no other binding can take it.
    packed: tuple[object, ...] = ()

    def __post_init__(self) -> None:
        visit = self.visit
        self.packed = (
            self.outcome,
            self.prefix,
            self.after,
            self.alone,
            email_part(self.email),
            self.no_consent,
            None if visit is None else id(visit.binding),
            None if visit is None else visit.generation,
        )


TAKE: Final = 0  # the C reader has these numbers too (`_segment_native.c`, SEEN_TAKE)
DROP: Final = 1
LEAVE: Final = 2  # to the general way
LEFT: Final = Seen(LEAVE, None)
CONTEXTS_KEPT: Final = 32_768
IDS_KEPT: Final = 16_384
MAX_KEPT_ID: Final = 256  # characters; a longer id is worked out each time, never kept
MAX_CONTEXT: Final = 8_192  # bytes; a longer context is worked out each time, never kept
# Bytes of the contexts and their stored parts: past it they start again empty, as past
# `CONTEXTS_KEPT` entries (32,768 contexts of up to 8 KB, each with a prefix as large, would
# otherwise hold hundreds of MB). A shop's contexts of ~1 KB with their parts fill it at ~16,000.
CONTEXTS_BYTES: Final = 32 * 1024 * 1024


class Contexts:
    """`Seen` by source, request sender and context bytes, for all requests: a visitor's
    events repeat their context as long as they stay on a page. Cleared, not evicted, when
    full; an entry whose visit is stale (the source's settings, the geo answers) is replaced.
    Beside them, as a visitor's ids come with each of their events: the ids' pseudonyms (by
    the tenant's key) and `user_data`'s opening with `external_id`, `IDS_KEPT` of each."""

    def __init__(self) -> None:
        self.by_sender: dict[tuple[object, ...], dict[bytes, Seen]] = {}
        self.count = 0
        self.bytes = 0  # of the contexts kept and their `Seen`'s parts (`CONTEXTS_BYTES`)
        self.pseudonyms: dict[bytes, dict[str, str]] = {}
        self.pseudonyms_count = 0
        self.externals: dict[str, bytes] = {}

    def pseudonyms_of(self, key: bytes) -> dict[str, str]:
        found = self.pseudonyms.get(key)
        if found is None:
            found = self.pseudonyms[key] = {}
        return found

    def kept_pseudonym(self, kept: dict[str, str], text: str, value: str) -> None:
        if len(text) > MAX_KEPT_ID:
            return
        if self.pseudonyms_count >= IDS_KEPT:
            for each in self.pseudonyms.values():
                each.clear()  # a request holding one keeps adding to a dict no longer counted
            self.pseudonyms.clear()
            self.pseudonyms_count = 0
        self.pseudonyms_count += 1
        kept[text] = value

    def kept_external(self, user: str, external: bytes) -> None:
        if len(user) <= MAX_KEPT_ID:
            if len(self.externals) >= IDS_KEPT:
                self.externals.clear()
            self.externals[user] = external

    def of(self, key: tuple[object, ...]) -> dict[bytes, Seen]:
        found = self.by_sender.get(key)
        if found is None:
            if len(self.by_sender) >= 4_096:
                self.clear()
            found = self.by_sender[key] = {}
        return found

    def kept(self, seen: dict[bytes, Seen], context: bytes, entry: Seen) -> None:
        if len(context) > MAX_CONTEXT:
            return
        size = len(context) + len(entry.prefix) + len(entry.after) + len(entry.alone)
        if self.count >= CONTEXTS_KEPT or self.bytes + size > CONTEXTS_BYTES:
            self.clear()
        self.count += 1
        self.bytes += size
        seen[context] = entry

    def clear(self) -> None:
        for seen in self.by_sender.values():
            seen.clear()  # a request holding one keeps adding to a dict no longer counted
        self.by_sender.clear()
        self.count = 0
        self.bytes = 0


_by_refiner: Final[dict[int, tuple[Refiner, Contexts]]] = {}


def contexts_of(refiner: Refiner) -> Contexts:
    """The refiner's contexts (one refiner per process; tests make several)."""
    found = _by_refiner.get(id(refiner))
    if found is None or found[0] is not refiner:
        if len(_by_refiner) >= 16:
            _by_refiner.clear()
        found = _by_refiner[id(refiner)] = (refiner, Contexts())
    return found[1]

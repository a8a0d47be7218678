"""Consent: which purposes an event was consented for (from the tracker or a TCF v2 string),
what a source does with an event that lacks them, and whether a destination may get it.

Pure functions over a `RequestContext`. A consent string that cannot be read counts as no
consent at all, never as an error: the event is then treated as its source's policy says.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import msgspec

from stellwerk.tracking.enrich import RequestContext, anonymise_ip

__all__ = [
    "DEFAULT_TCF_PURPOSES",
    "MAX_TCF_STRING",
    "Consent",
    "ConsentPolicy",
    "Decision",
    "Drop",
    "Keep",
    "KeepAnonymous",
    "TcfConsent",
    "anonymise",
    "consent_of",
    "decide",
    "decode_tcf",
    "listed_consent",
    "may_deliver",
]

# Named purposes a TCF string grants when all the TCF purposes listed are consented
# (TCF v2.2: 1 store/access on a device, 2-4 advertising and its profiles, 5-6 content
# profiles, 7 ad measurement, 8 content measurement, 9 audience statistics).
DEFAULT_TCF_PURPOSES: dict[str, tuple[int, ...]] = {
    "analytics": (1, 8),
    "advertising": (1, 2, 3, 4, 7),
    "personalisation": (1, 5, 6),
}
MAX_TCF_STRING = 4096  # characters; real ones are a few hundred
# Decoding a string costs 20-50 us, and a visitor sends the same one with every event until
# they change their choice; decoded strings are immutable, so one copy serves them all.
TCF_CACHE_SIZE = 4096
MAX_PURPOSES = 64
MAX_PURPOSE_NAME = 64
TCF_COOKIE = "euconsent-v2"  # the IAB's cookie name for a TCF v2 string


class TcfConsent(msgspec.Struct, frozen=True):
    """The core segment of a TCF v2 TC string. `vendors` holds the consented vendor ids as
    sorted, disjoint, inclusive ranges; None when the string ends before that section could
    be read (the purposes before it still count)."""

    version: int
    created: int  # deciseconds since the epoch, as the string holds it
    last_updated: int
    cmp_id: int
    cmp_version: int
    consent_screen: int
    consent_language: str
    vendor_list_version: int
    policy_version: int
    service_specific: bool
    special_features: frozenset[int]
    purposes: frozenset[int]  # purpose consents, 1..24
    legitimate_interests: frozenset[int]
    purpose_one_treatment: bool
    publisher_country: str
    vendors: tuple[tuple[int, int], ...] | None

    def has_vendor(self, vendor: int) -> bool:
        if self.vendors is None:
            return False
        at = bisect.bisect_right(self.vendors, (vendor, 1 << 17)) - 1
        return at >= 0 and self.vendors[at][0] <= vendor <= self.vendors[at][1]


class Consent(msgspec.Struct, frozen=True):
    """An event's consent. `origin` says where it came from: ``none`` (the event said
    nothing), ``tracker`` (a list of purposes), ``tcf`` (a TC string). TCF purposes appear
    as ``tcf:N`` beside the names they grant; `tcf` is the decoded string."""

    origin: Literal["none", "tracker", "tcf"] = "none"
    purposes: frozenset[str] = frozenset()
    tcf: TcfConsent | None = None


NO_CONSENT = Consent()


class ConsentPolicy(msgspec.Struct, frozen=True):
    """A source's consent settings. An event whose consent covers every `required` purpose is
    kept as is; any other is dropped or kept anonymously, as `without` says. With nothing
    required (the default, for a shop whose consent manager is not wired in), every event is
    kept. `tcf_purposes` names the purposes that TCF purposes grant."""

    required: tuple[str, ...] = ()
    without: Literal["drop", "anonymous"] = "anonymous"
    tcf_purposes: dict[str, tuple[int, ...]] = msgspec.field(
        default_factory=lambda: dict(DEFAULT_TCF_PURPOSES)
    )


class Keep(msgspec.Struct, frozen=True):
    """Store the event as it came; the collector may set its visitor cookie."""

    @property
    def sets_cookie(self) -> bool:
        return True


class KeepAnonymous(msgspec.Struct, frozen=True):
    """Store the event after `anonymise`; no visitor cookie. `missing`: the required
    purposes the consent lacked."""

    missing: tuple[str, ...]

    @property
    def sets_cookie(self) -> bool:
        return False


class Drop(msgspec.Struct, frozen=True):
    """Do not store the event; the client is answered as if it were, so that a tracker does
    not retry it forever. No visitor cookie."""

    missing: tuple[str, ...]

    @property
    def sets_cookie(self) -> bool:
        return False


Decision = Keep | KeepAnonymous | Drop

_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


@functools.lru_cache(maxsize=TCF_CACHE_SIZE)
def decode_tcf(text: str) -> TcfConsent | None:
    """The core segment of a TCF v2 string, or None if it is not one. Other segments
    (disclosed vendors, publisher purposes) follow after dots and are ignored."""
    core = text.strip().split(".", 1)[0]
    if len(core) > MAX_TCF_STRING or not _BASE64URL.fullmatch(core):
        return None
    try:
        # Encoders write 6 bits a character, unpadded; "A" pads with zero bits.
        data = base64.urlsafe_b64decode(core + "A" * (-len(core) % 4))
    except (binascii.Error, ValueError):
        return None
    bits = _Bits(int.from_bytes(data, "big") >> (len(data) * 8 - len(core) * 6), len(core) * 6)
    try:
        fields = [bits.read(width) for width in (6, 36, 36, 12, 12, 6, 12, 12, 6, 1, 1)]
        version, created, updated, cmp_id, cmp_version, screen, language = fields[:7]
        if version != 2:
            return None
        special, purposes, interests = bits.read(12), bits.read(24), bits.read(24)
        one_treatment, publisher = bits.read(1), bits.read(12)
    except _Short:
        return None
    try:
        vendors: tuple[tuple[int, int], ...] | None = _vendor_ranges(bits)
    except _Short:
        vendors = None
    return TcfConsent(
        version=version,
        created=created,
        last_updated=updated,
        cmp_id=cmp_id,
        cmp_version=cmp_version,
        consent_screen=screen,
        consent_language=_letters(language),
        vendor_list_version=fields[7],
        policy_version=fields[8],
        service_specific=bool(fields[9]),
        special_features=_flags(special, 12),
        purposes=_flags(purposes, 24),
        legitimate_interests=_flags(interests, 24),
        purpose_one_treatment=bool(one_treatment),
        publisher_country=_letters(publisher),
        vendors=vendors,
    )


class _Short(Exception):
    """The string ended inside a field."""


class _Bits:
    """Reads a bit string front to back, held as one integer."""

    def __init__(self, value: int, length: int) -> None:
        self.value, self.length, self.at = value, length, 0

    def read(self, width: int) -> int:
        end = self.at + width
        if end > self.length:
            raise _Short
        self.at = end
        return (self.value >> (self.length - end)) & ((1 << width) - 1)


def _flags(value: int, width: int) -> frozenset[int]:
    """Bit 1 is the first (most significant) of `width` bits."""
    return frozenset(n for n in range(1, width + 1) if value >> (width - n) & 1)


def _letters(value: int) -> str:
    """Two letters of 6 bits each, A = 0; "" when either is past Z."""
    first, second = value >> 6, value & 63
    return chr(65 + first) + chr(65 + second) if first < 26 and second < 26 else ""


_RUN = re.compile("1+")


def _vendor_ranges(bits: _Bits) -> tuple[tuple[int, int], ...] | None:
    """The vendor consent section, as ranges: a bit field, or range entries. Ranges rather
    than a set, so that a string of 4,095 ranges of 65,535 vendors costs nothing to hold."""
    max_vendor, is_range = bits.read(16), bits.read(1)
    if not is_range:
        field = format(bits.read(max_vendor), f"0{max_vendor}b") if max_vendor else ""
        return tuple((m.start() + 1, m.end()) for m in _RUN.finditer(field))
    ranges = []
    for _ in range(bits.read(12)):
        is_span, start = bits.read(1), bits.read(16)
        end = bits.read(16) if is_span else start
        if start == 0 or end < start or end > max_vendor:
            return None  # not a valid entry: vendor consents unknown
        ranges.append((start, end))
    ranges.sort()
    merged: list[tuple[int, int]] = []
    for start, end in ranges:
        if merged and start <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return tuple(merged)


def consent_of(context: RequestContext, policy: ConsentPolicy) -> Consent:
    """The event's consent. The event's own statement wins over the browser's cookie:
    ``context.consent.purposes`` (a list of names: Stellwerk's tracker), then
    ``context.consent.categoryPreferences`` (Segment's consent manager: names to booleans),
    then ``context.consent.tcString``, the payload's ``gdpr_consent`` (the IAB's URL
    parameter, as a pixel sends it), and last the ``euconsent-v2`` cookie."""
    payload = context.payload
    inner = payload.get("context")
    stated = inner.get("consent") if isinstance(inner, dict) else None
    stated = stated if isinstance(stated, dict) else {}
    listed = stated.get("purposes")
    if isinstance(listed, list):
        return listed_consent(listed)
    preferences = stated.get("categoryPreferences")
    if isinstance(preferences, dict):
        return Consent("tracker", _names(name for name, on in preferences.items() if on is True))
    for candidate in (
        stated.get("tcString"),
        payload.get("gdpr_consent"),
        _cookie(context.headers.get("cookie", ""), TCF_COOKIE),
    ):
        if isinstance(candidate, str) and candidate:
            decoded = decode_tcf(candidate)
            return NO_CONSENT if decoded is None else _from_tcf(decoded, policy.tcf_purposes)
    return NO_CONSENT


def listed_consent(values: Sequence[object]) -> Consent:
    """The consent of a tracker's list of purposes (`context.consent.purposes`), as
    `consent_of` reads it; kept by the list when it holds only strings (a shop's visitors
    state a handful of combinations), so that a list seen before costs one lookup."""
    key = tuple(values)
    try:
        found = _LISTED.get(key)
    except TypeError:  # an unhashable value (a list, an object): never kept
        found = None
    if found is not None:
        return found
    consent = Consent("tracker", _names(key))
    if len(key) <= MAX_PURPOSES and all(
        isinstance(v, str) and len(v) <= MAX_PURPOSE_NAME for v in key
    ):
        if len(_LISTED) >= LISTED_KEPT:
            _LISTED.clear()
        _LISTED[key] = consent
    return consent


LISTED_KEPT = 1024
# Consents by their lists of purposes (strings only, so that no other list equals a key).
_LISTED: dict[tuple[object, ...], Consent] = {}


def _names(values: Iterable[object]) -> frozenset[str]:
    found: set[str] = set()
    for value in values:
        name = value.strip().lower() if isinstance(value, str) else ""
        if 0 < len(name) <= MAX_PURPOSE_NAME:
            found.add(name)
            if len(found) >= MAX_PURPOSES:
                break
    return frozenset(found)


def _from_tcf(tcf: TcfConsent, names: Mapping[str, tuple[int, ...]]) -> Consent:
    granted = {f"tcf:{n}" for n in tcf.purposes}
    granted |= {name for name, needed in names.items() if tcf.purposes.issuperset(needed)}
    return Consent("tcf", frozenset(granted), tcf)


def _cookie(header: str, name: str) -> str:
    if name not in header:
        return ""
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value.strip('"')
    return ""


def decide(consent: Consent, policy: ConsentPolicy) -> Decision:
    """Keep the event as is, keep it anonymously, or drop it."""
    missing = tuple(sorted(set(policy.required) - consent.purposes))
    if not missing:
        return Keep()
    return Drop(missing) if policy.without == "drop" else KeepAnonymous(missing)


def may_deliver(consent: Consent, purposes: Iterable[str], tcf_vendor: int | None = None) -> bool:
    """Whether a destination that needs `purposes` (and, for an ad tool registered with the
    IAB, consent for its TCF vendor id) may get the event. A vendor id is checked only
    against a TCF consent: a tracker's purpose list says nothing about vendors."""
    if not consent.purposes.issuperset(purposes):
        return False
    if tcf_vendor is not None and consent.tcf is not None:
        return consent.tcf.has_vendor(tcf_vendor)
    return True


# What `anonymise` takes out of a payload: Segment's and Snowplow's ids of a person, a
# device or a browser session, and the traits that describe the person.
_IDS = ("userId", "anonymousId", "previousId", "traits", "uid", "duid", "nuid", "tnuid", "sid")
_CONTEXT_IDS = ("traits",)
_DEVICE_IDS = ("id", "advertisingId")


def anonymise(context: RequestContext) -> RequestContext:
    """The request with no ids left: the payload's user, anonymous and device ids and traits
    removed, the IP truncated (in the payload too), and no cookie header."""
    payload: dict[str, Any] = {k: v for k, v in context.payload.items() if k not in _IDS}
    if isinstance(payload.get("ip"), str):  # Snowplow's ip parameter
        payload["ip"] = anonymise_ip(payload["ip"])[0]
    inner = payload.get("context")
    if isinstance(inner, dict):
        inner = {k: v for k, v in inner.items() if k not in _CONTEXT_IDS}
        if isinstance(inner.get("ip"), str):
            inner["ip"] = anonymise_ip(inner["ip"])[0]
        device = inner.get("device")
        if isinstance(device, dict):
            inner["device"] = {k: v for k, v in device.items() if k not in _DEVICE_IDS}
        payload["context"] = inner
    headers = {k: v for k, v in context.headers.items() if k != "cookie"}
    return msgspec.structs.replace(
        context, ip=anonymise_ip(context.ip)[0], headers=headers, payload=payload
    )

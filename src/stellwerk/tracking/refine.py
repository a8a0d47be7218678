"""The collector's `refine`: consent, then enrichment and pseudonymisation, on every message
before it is stored (the order of docs/tracking_enrichment.md).

What it adds goes into the message's `context.stellwerk` (so into the stored event's
`data.context.stellwerk`): Segment's own payload stays as it was sent, and Segment keeps extra
information about a call in `context`. Whatever a client sent there is replaced, and dotted
keys that a pattern would read as the same path (`"context.stellwerk.consent..."` at the top,
`"stellwerk...."` in `context`) are removed, so no client can claim a consent it was not given:
destination rules require purposes by matching `data.context.stellwerk.consent.purposes`.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

import msgspec

from stellwerk.tracking.collector import Arrival
from stellwerk.tracking.consent import (
    DEFAULT_TCF_PURPOSES,
    Consent,
    ConsentPolicy,
    anonymise,
    consent_of,
    listed_consent,
)
from stellwerk.tracking.enrich import (
    Enricher,
    Enrichment,
    RequestContext,
    SourcePrivacy,
    anonymise_ip,
    pseudonymise,
)
from stellwerk.tracking.model import Binding
from stellwerk.tracking.refine_parts import VisitParts

# The purpose under which the capability context derives the pseudonym master key; each
# tenant's key is the HMAC of its id under it.
PSEUDONYM_PURPOSE: Final = "tracking-pseudonyms"
MEMBER: Final = "stellwerk"  # the member of `context` that refine writes
_FORGED_TOP: Final = "context." + MEMBER
_FORGED_INNER: Final = MEMBER + "."
VISITS_KEPT: Final = 32_768  # decisions and enrichments by visit (`_visit_key`)
MAX_VISIT_TEXT: Final = 2_048  # longer inputs are worked out each time, never kept
# Characters of the kept visits' keys and bytes of their encodings: past it they start again
# empty, as past `VISITS_KEPT` entries (keys of up to 2,048 characters, each with its
# enrichment's JSON, would otherwise hold hundreds of MB).
VISITS_SIZE: Final = 32 * 1024 * 1024
MAX_VISIT_PURPOSES: Final = 16


class Refiner:
    """`refine` with what it needs once per process: the enricher (its caches, the geo
    database) and the pseudonym master key. Tenant keys are derived once and kept."""

    def __init__(self, enricher: Enricher, master_key: bytes) -> None:
        self._enricher = enricher
        self._master = master_key
        self._tenant_keys: dict[str, bytes] = {}
        # A visit's enrichment and consent by its parts (agent, address, page, consent).
        self._parts = VisitParts(enricher)
        # By the binding's identity: the source cache hands out one object per source until it
        # changes, and hashing a Binding on every message would cost more than the rest of it.
        self._policies: dict[int, tuple[Binding, _Settings]] = {}
        # The first binding of each value seen: the source cache makes a new object of an
        # unchanged source every few seconds, and visits are kept by the binding's identity.
        self._canonical: dict[Binding, Binding] = {}
        # Decisions and enrichments by visit (`_visit_key`): cleared, not evicted, when full
        # (`VISITS_KEPT` entries, or `VISITS_SIZE` of their keys' text and encodings).
        self._visits: dict[tuple[object, ...], Visit] = {}
        self._visits_size = 0

    def tenant_key(self, tenant_id: str) -> bytes:
        """The tenant's pseudonym key: HMAC-SHA256 of its id under the master key, so the same
        value gets another pseudonym in another tenant, and every process derives the same."""
        key = self._tenant_keys.get(tenant_id)
        if key is None:
            key = hmac.digest(self._master, tenant_id.encode(), hashlib.sha256)
            self._tenant_keys[tenant_id] = key
        return key

    def _settings(self, binding: Binding) -> _Settings:
        """The binding of the same value first seen (whose identity visits are kept by), the
        source's consent policy, its privacy settings, and those for anonymous events."""
        found = self._policies.get(id(binding))
        if found is None or found[0] is not binding:
            tcf = dict(binding.tcf_purposes)
            policy = ConsentPolicy(
                required=binding.consent_purposes,
                without=binding.without_consent,
                tcf_purposes=tcf or dict(DEFAULT_TCF_PURPOSES),
            )
            privacy = SourcePrivacy(
                keep_full_ip=binding.full_ip,
                pseudonymise=binding.pseudonymise,
                internal_hosts=binding.internal_hosts,
            )
            anonymous = msgspec.structs.replace(privacy, keep_full_ip=False)
            if len(self._policies) >= 1000:  # bindings change; keep this a bound, not a leak
                self._policies.clear()
            if len(self._canonical) >= 1000:
                self._canonical.clear()
            canonical = self._canonical.setdefault(binding, binding)
            settings = (canonical, policy, privacy, anonymous)
            found = self._policies[id(binding)] = (binding, settings)
        return found[1]

    def _visit(
        self,
        request: RequestContext,
        binding: Binding,
        policy: ConsentPolicy,
        privacy: SourcePrivacy,
        anonymous_privacy: SourcePrivacy,
    ) -> Visit:
        """Consent, the decision and enrichment of a request, and what they add to every
        event of it: what `_visit_key`'s inputs decide."""
        agent = request.user_agent or request.headers.get("user-agent", "")
        consent = consent_of(request, policy)
        return self._visit_of(
            consent,
            request.ip,
            agent,
            request.url,
            request.referrer,
            binding,
            policy,
            privacy,
            anonymous_privacy,
        )

    def _visit_of(
        self,
        consent: Consent,
        ip: str,
        agent: str,
        url: str,
        referrer: str,
        binding: Binding,
        policy: ConsentPolicy,
        privacy: SourcePrivacy,
        anonymous_privacy: SourcePrivacy,
    ) -> Visit:
        """`_visit` of a request's consent and enrichment's inputs, worked out by their
        parts, each kept (`refine_parts`): the same as `enrich` of the request (anonymised
        first for an event kept anonymously, whose address is then cut whatever the source
        allows)."""
        generation = self._enricher.generation
        decided = self._parts.consent(consent, binding, policy)
        if decided.drop:
            return Visit(binding, generation, False, None, {}, b"")
        anonymous = decided.anonymous
        if anonymous:
            privacy = anonymous_privacy
        parts = self._parts
        # `anonymise` cuts the address, and enrichment cuts it again to the same (or keeps
        # it whole): the anonymised request's enrichment is the address's with the anonymous
        # privacy, which never keeps it whole.
        network = parts.network(ip, privacy.keep_full_ip)
        parsed = parts.agent(agent)
        page = parts.page(url, referrer, privacy.internal_hosts)
        enrichment = Enrichment(
            network.ip, parsed.parsed, network.geo, page.campaign, page.referrer
        )
        added: dict[str, Any] = {
            "ip": network.ip,
            "user_agent": parsed.stored,
            "geo": network.stored,
            "campaign": page.stored,  # shared parts: never changed
            "referrer": page.referrer,
            "consent": decided.stored,
        }
        # Encoded once, without its closing brace: the start of every event's member (`stored`).
        encoded = b"".join(
            (
                b'{"ip":',
                network.ip_encoded,
                b',"user_agent":',
                parsed.encoded,
                b',"geo":',
                network.geo_encoded,
                page.encoded,
                b',"consent":',
                decided.encoded,
                b",",
            )
        )
        return Visit(binding, generation, anonymous, enrichment, added, encoded)

    @property
    def generation(self) -> int:
        """The enricher's: a visit of another generation is stale."""
        return self._enricher.generation

    def _keep(self, key: tuple[object, ...], visit: Visit) -> None:
        size = len(visit.encoded) + sum(len(part) for part in key if isinstance(part, str))
        if len(self._visits) >= VISITS_KEPT or self._visits_size + size > VISITS_SIZE:
            self._visits.clear()
            self._visits_size = 0
        self._visits_size += size
        self._visits[key] = visit

    def settings(self, binding: Binding) -> _Settings:
        """The binding of the same value visits are kept by, the source's consent policy, its
        privacy settings, and those for anonymous events."""
        return self._settings(binding)

    def visit(
        self,
        key: tuple[object, ...],
        sender: Sender,
        listed: Sequence[str] | None,
        binding: Binding,
    ) -> Visit:
        """The visit of `key` (`visit_key`'s, of the event's list of purposes `listed` and its
        `sender`): from the cache, or worked out and kept. What `refine` decides for such an
        event, for a protocol's own reader of messages that are not dicts (`segment_reader`)."""
        visit = self._visits.get(key)
        canonical, policy, privacy, anonymous_privacy = self._settings(binding)
        if (
            visit is None
            or visit.binding is not canonical
            or visit.generation != self._enricher.generation
        ):
            ip, agent, url, referrer, headers = sender
            # The list of purposes is all that consent reads of a message that has one; None:
            # the message states no consent at all (and the request carries no TCF cookie).
            consent = (
                consent_of(RequestContext(*sender), policy)
                if listed is None
                else listed_consent(listed)
            )
            agent = agent or headers.get("user-agent", "")
            visit = self._visit_of(
                consent, ip, agent, url, referrer, canonical, policy, privacy, anonymous_privacy
            )
            self._keep(key, visit)
        return visit

    def __call__(
        self, message: dict[str, Any], arrival: Arrival, binding: Binding
    ) -> dict[str, Any] | None:
        return self._refine(message, arrival, binding, False)

    def stored(
        self, message: dict[str, Any], arrival: Arrival, binding: Binding
    ) -> dict[str, Any] | None:
        """`refine` as the collector plugs it in: the same message, but `context.stellwerk`
        as its JSON (`msgspec.Raw`, which the collector's encoder writes as given), the part
        shared by a visit's events encoded once per visit. Byte for byte what encoding
        `__call__`'s answer gives."""
        return self._refine(message, arrival, binding, True)

    def _refine(
        self, message: dict[str, Any], arrival: Arrival, binding: Binding, raw: bool
    ) -> dict[str, Any] | None:
        canonical, policy, privacy, anonymous_privacy = self._settings(binding)
        message = _without_forgeries(message)
        sender = _sender(message, arrival, binding.kind)
        key = _visit_key(message, sender, id(canonical))
        visit = self._visits.get(key) if key is not None else None
        # The request's context is made only when it is read: on a visit's first event, or to
        # anonymise one (a hit needs no more than the sender's address and agent).
        request: RequestContext | None = None
        if (
            visit is None
            or visit.binding is not canonical
            or visit.generation != self._enricher.generation
        ):
            request = RequestContext(*sender, payload=message)
            visit = self._visit(request, canonical, policy, privacy, anonymous_privacy)
            if key is not None:
                self._keep(key, visit)
        # Else a visitor's next event: the same consent list, address, agent, page and referrer
        # as one before it, so the same decision and enrichment.
        enrichment = visit.enrichment
        if enrichment is None:
            return None  # no consent, and the source drops such events
        ip, agent = sender[0], sender[1]
        if visit.anonymous:
            request = anonymise(request or RequestContext(*sender, payload=message))
            message, ip = request.payload, request.ip
            privacy = anonymous_privacy
        if privacy.pseudonymise:
            message = pseudonymise(
                message, privacy.pseudonymise, self.tenant_key(binding.tenant.id)
            )
        inner = message.get("context")
        inner = (
            dict(inner) if isinstance(inner, dict) else {} if inner is None else {"value": inner}
        )
        if not privacy.keep_full_ip:
            if isinstance(inner.get("ip"), str):
                # Most often the address enrichment anonymised already.
                same = inner["ip"] == ip
                inner["ip"] = enrichment.ip if same else anonymise_ip(inner["ip"])[0]
            if isinstance(message.get("ip"), str):  # Snowplow's ip parameter
                message["ip"] = anonymise_ip(message["ip"])[0]
        snowplow = binding.kind == "snowplow"
        event_time = (
            _epoch_of_millis(message.get("ttm"), message.get("dtm")) if snowplow else None
        ) or _epoch(message.get("timestamp"), arrival.received_at)
        found = _user_data(message, "uid" if snowplow else "userId", enrichment.ip, agent)
        if raw:
            inner[MEMBER] = stored_member(visit, arrival.received_at, event_time, found)
        else:
            added = dict(visit.added)  # the shared part's values are shared, never changed
            added["received_at"] = arrival.received_at
            added["event_time"] = event_time
            if found:
                added["user_data"] = found
            inner[MEMBER] = added
        message["context"] = inner  # a top-level member: the collector lets refine set it
        return message


def stored_member(
    visit: Visit, received_at: str, event_time: int, found: dict[str, Any]
) -> msgspec.Raw:
    """`context.stellwerk` as its JSON: the visit's part, then this event's own
    (`{"ip":...,"consent":{...}` + `,` + `"received_at":...}`), the members in the order of
    `_refine`'s dict."""
    own = _encode(_Own(received_at, event_time, found or None))
    return msgspec.Raw(visit.encoded + own[1:])


def user_data_part(found: dict[str, Any]) -> bytes:
    """What `stored_member` writes of `user_data` after `event_time`: `,"user_data":{...}`,
    or nothing for none."""
    return b',"user_data":' + _encode(found) if found else b""


def epoch(timestamp: object, received_at: str) -> int:
    """`_epoch`: Unix seconds of a message's `timestamp`, else of its arrival."""
    return _epoch(timestamp, received_at)


class _Own(msgspec.Struct, omit_defaults=True, gc=False):
    """The members of `context.stellwerk` that are each event's own, in their order."""

    received_at: str
    event_time: int
    user_data: dict[str, Any] | None = None


_encode: Final = msgspec.json.Encoder().encode


_Settings = tuple[Binding, ConsentPolicy, SourcePrivacy, SourcePrivacy]


class Visit(msgspec.Struct, frozen=True):
    """What a visit's inputs decided: whether the event is kept anonymously, its enrichment
    (None: dropped, no consent) and the part of `context.stellwerk` made of them. The binding
    and the enricher's generation are held so that a key whose binding id was reused by
    another binding, or a replaced geo database, never matches."""

    binding: Binding
    generation: int
    anonymous: bool
    enrichment: Enrichment | None
    added: dict[str, Any]
    encoded: bytes


def _visit_key(
    message: dict[str, Any], sender: Sender, binding_id: int
) -> tuple[object, ...] | None:
    """The inputs that decide consent and enrichment, when they are the common ones: a
    tracker's list of purposes (strings) as the event's consent, and an address, agent, page
    and referrer short enough to keep. None otherwise (categoryPreferences, a TCF string, a
    cookie, long values): worked out each time."""
    inner = message.get("context")
    stated = inner.get("consent") if isinstance(inner, dict) else None
    listed = stated.get("purposes") if isinstance(stated, dict) else None
    if not isinstance(listed, list) or len(listed) > MAX_VISIT_PURPOSES:
        return None
    for value in listed:
        if not isinstance(value, str):
            return None
    return visit_key(listed, sender, binding_id)


def visit_key(listed: Sequence[str], sender: Sender, binding_id: int) -> tuple[object, ...] | None:
    """`_visit_key` of a list of at most `MAX_VISIT_PURPOSES` strings."""
    ip, agent, url, referrer, headers = sender
    if len(agent) + len(url) + len(referrer) + len(ip) > MAX_VISIT_TEXT:
        return None
    return (binding_id, ip, agent or headers.get("user-agent", ""), url, referrer, *listed)


Sender = tuple[str, str, str, str, dict[str, str]]
"""A `RequestContext`'s members but the payload: address, agent, page, referrer, headers."""


def request_context(message: dict[str, Any], arrival: Arrival, binding: Binding) -> RequestContext:
    """What the message and its request tell about the sender. A server-side SDK relays the
    browser's address and agent in `context.ip` / `context.userAgent` (Segment) or `ip` / `ua`
    (Snowplow); they win over the request's own.

    The request's own `User-Agent` stands for the visitor's only when a browser sent the
    request (it has an `Origin`), or for Snowplow, whose pixel comes from an image without
    one. A shop's backend sending a Segment call is not the visitor: its `python-requests/2`
    would flag every server-side event as a bot's, and destinations skip bots' events."""
    return RequestContext(*_sender(message, arrival, binding.kind), payload=message)


def _sender(message: dict[str, Any], arrival: Arrival, kind: str) -> Sender:
    """`request_context`'s members but the payload, as a tuple (cheaper than the struct on a
    visit's next event, which reads no more than the address and the agent)."""
    inner = message.get("context")
    inner = inner if isinstance(inner, dict) else {}
    page = inner.get("page")
    page = page if isinstance(page, dict) else {}
    if kind == "snowplow":
        ip, agent = message.get("ip"), message.get("ua")
        url, referrer = message.get("url"), message.get("refr")
    else:
        ip, agent = inner.get("ip"), inner.get("userAgent")
        url, referrer = page.get("url"), page.get("referrer")
    return sender_of(ip, agent, url, referrer, arrival, kind)


def sender_of(
    ip: object, agent: object, url: object, referrer: object, arrival: Arrival, kind: str
) -> Sender:
    """The sender of the values a message holds (of any type: a value that is no string, or
    an empty one, counts as not given), with the request's where the message gives none."""
    headers = arrival.headers
    if not (isinstance(agent, str) and agent):
        if arrival.origin or kind == "snowplow":
            agent = arrival.user_agent
        else:
            agent = ""
            if "user-agent" in headers:  # enrichment would fall back to it
                headers = _without_agent(headers)
    return (
        ip if isinstance(ip, str) and ip else arrival.ip or "",
        agent or "",
        url if isinstance(url, str) else "",
        referrer if isinstance(referrer, str) and referrer else arrival.referrer or "",
        headers,
    )


class _Agentless:
    """Headers without `user-agent`, made once per request: every message of a batch shares
    its request's headers, so the last request's copy is kept (with the original, so that
    the identity check cannot match another request's)."""

    def __init__(self) -> None:
        self._last: tuple[dict[str, str], dict[str, str]] | None = None

    def __call__(self, headers: dict[str, str]) -> dict[str, str]:
        if self._last is not None and self._last[0] is headers:
            return self._last[1]
        copy = {k: v for k, v in headers.items() if k != "user-agent"}
        self._last = (headers, copy)
        return copy


_without_agent = _Agentless()


def _without_forgeries(message: dict[str, Any]) -> dict[str, Any]:
    """`message` without the dotted keys that the pattern language would read as a path into
    `context.stellwerk` (copied only if it has one)."""
    inner = message.get("context")
    # A quick look first, in C: such keys are rare, and a loop in Python over every key of
    # every message would cost more than the rest of the check.
    suspect = _FORGED_TOP in "\0".join(message) or (
        isinstance(inner, dict) and _FORGED_INNER in "\0".join(inner)
    )
    if not suspect:
        return message
    forged = [k for k in message if k.startswith(_FORGED_TOP) and k[len(_FORGED_TOP) :][:1] in "."]
    inner_forged = (
        [k for k in inner if k.startswith(_FORGED_INNER)] if isinstance(inner, dict) else []
    )
    if not forged and not inner_forged:
        return message
    cleaned = {k: v for k, v in message.items() if k not in forged}
    if inner_forged and isinstance(inner, dict):
        cleaned["context"] = {k: v for k, v in inner.items() if k not in inner_forged}
    return cleaned


def _epoch(timestamp: object, received_at: str) -> int:
    """Unix seconds of the message's `timestamp` (RFC 3339), else of its arrival: what ad
    platforms' server APIs take as the event's time (Meta's `event_time`)."""
    for text in (timestamp, received_at):
        if isinstance(text, str) and text:
            try:
                return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())
            except ValueError:
                continue
    return 0


def _epoch_of_millis(*values: object) -> int | None:
    """Unix seconds of the first of Snowplow's millisecond timestamps (`ttm`, the true time a
    tracker was given, else `dtm`, the device's) that is one, as text or a number."""
    for value in values:
        if isinstance(value, str) and value.isdecimal() and len(value) <= 15:
            return int(value) // 1000
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**15:
            return value // 1000
    return None


@functools.lru_cache(maxsize=16_384)
def _sha256(text: str) -> str:
    """Cached: a visitor's ids come with each of their events."""
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()


def _user_data(message: dict[str, Any], user_field: str, ip: str, agent: str) -> dict[str, Any]:
    """The person's identifiers as ad platforms' server APIs match them: SHA-256 of the
    e-mail address trimmed and in lower case (`em`) and of the user id (`external_id`), each
    in a list, with the (anonymised) address and the agent, in the Meta Conversions API's
    `user_data` shape. A pseudonymised field gives the hash of its pseudonym; an anonymous
    event has none of them."""
    traits = message.get("traits")
    inner = message.get("context")
    if not isinstance(traits, dict) and isinstance(inner, dict):
        traits = inner.get("traits")
    email = traits.get("email") if isinstance(traits, dict) else None
    # Segment's userId, Snowplow's uid
    return user_data(email, message.get(user_field), ip, agent)


def sender_data(ip: str, agent: str) -> bytes:
    """The members of `user_data` that are the sender's (`"client_ip_address":...,
    "client_user_agent":...`), as `user_data(None, None, ip, agent)` encodes them."""
    if ip and agent:
        return b"".join(
            (
                b'"client_ip_address":',
                _encode(ip),
                b',"client_user_agent":',
                _encode(agent[:512]),
            )
        )
    if ip:
        return b'"client_ip_address":' + _encode(ip)
    if agent:
        return b'"client_user_agent":' + _encode(agent[:512])
    return b""


def user_data(email: object, user: object, ip: str, agent: str) -> dict[str, Any]:
    """`_user_data` of the e-mail address and the user id a message holds (any values)."""
    found: dict[str, Any] = {}
    if isinstance(email, str) and email.strip():
        found["em"] = [_sha256(email.strip().lower())]
    if isinstance(user, str | int) and not isinstance(user, bool) and str(user):
        found["external_id"] = [_sha256(str(user))]
    if ip:
        found["client_ip_address"] = ip
    if agent:
        found["client_user_agent"] = agent[:512]
    return found

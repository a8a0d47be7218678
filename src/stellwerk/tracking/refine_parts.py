"""A visit's enrichment and consent kept by its parts (issue 17, tracking7).

`Refiner` keeps a visit's decision by all its inputs together (address, agent, page, referrer,
purposes), and the Segment reader a context's by its bytes. A shop's backend relaying its
visitors' events sends a new context with nearly every page view, and each visitor's address is
their own: both caches miss, and working a visit out again cost ~4 us of the ~9 us a new context
cost. But a visit is made of parts that recur across visitors: a few hundred user agents, a
shop's pages and referrers, a handful of consent combinations. Each part's share of the visit
is kept here by the part alone, with its JSON as `context.stellwerk` holds it, so that a visit
of parts seen before costs a few dict lookups, the address's anonymisation and one join.

What each part decides, and so what is kept by it:

- the agent (cut to `MAX_USER_AGENT`): `user_agent` (`Enricher.user_agent`, itself cached);
- the address and whether it is kept whole: `ip` and `geo` (of the anonymised network, as
  `Enricher.geo`), for the enricher's generation (a replaced geo database clears them);
- the page and referrer, with the source's own hosts: `campaign` and `referrer`;
- the consent (its origin and purposes) under a source's policy: the decision and `consent`.

None of it depends on the tenant's pseudonym key (pseudonyms are kept by `segment_kept`, per
key). Every cache is bounded by entries and by the characters of its keys, and cleared, not
evicted, when full; a text longer than `MAX_PART_TEXT` is worked out each time, never kept.
The answers are byte for byte `Enricher.enrich`'s and `_encode(added)`'s (tests/tracking/
test_refine_parts.py proves it for random parts).
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from stellwerk.tracking.consent import Consent, ConsentPolicy, Drop, KeepAnonymous, decide
from stellwerk.tracking.enrich import (
    MAX_USER_AGENT,
    Campaign,
    Enricher,
    Geo,
    UserAgent,
    anonymise_ip,
    campaign_of,
    canonical_ip,
    referrer_class,
)
from stellwerk.tracking.model import PURPOSE, Binding

_encode: Final = msgspec.json.Encoder().encode

# Entries and key characters of each part's cache; a text longer than MAX_PART_TEXT is never
# kept (real agents, addresses and most URLs are far shorter).
PARTS_KEPT: Final = 16_384
PART_CHARACTERS: Final = 4_000_000
MAX_PART_TEXT: Final = 2_048


class _Kept:
    """A dict bounded by its entries and its keys' characters: cleared, not evicted, when
    full (a key's characters are counted as the caller says)."""

    __slots__ = ("characters", "found")

    def __init__(self) -> None:
        self.found: dict[Any, Any] = {}
        self.characters = 0

    def keep(self, key: object, characters: int, value: object) -> None:
        if len(self.found) >= PARTS_KEPT or self.characters + characters > PART_CHARACTERS:
            self.clear()
        self.found[key] = value
        self.characters += characters

    def clear(self) -> None:
        self.found.clear()
        self.characters = 0


def known(part: msgspec.Struct) -> dict[str, Any]:
    """A struct's fields but the unknown ones (`""`, null), as `context.stellwerk` holds it."""
    return {k: v for k, v in msgspec.structs.asdict(part).items() if v != "" and v is not None}


class AgentPart(msgspec.Struct, frozen=True, gc=False):
    parsed: UserAgent
    stored: dict[str, Any]
    encoded: bytes


class NetworkPart(msgspec.Struct, frozen=True, gc=False):
    ip: str
    geo: Geo
    stored: dict[str, Any]
    ip_encoded: bytes  # `"ip":"..."`'s value
    geo_encoded: bytes


class PagePart(msgspec.Struct, frozen=True, gc=False):
    campaign: Campaign
    stored: dict[str, Any]
    referrer: str
    encoded: bytes  # `,"campaign":{...},"referrer":"..."`


class ConsentPart(msgspec.Struct, frozen=True, gc=False):
    """A consent's decision under one source's policy: drop, or keep (anonymously or not),
    with `context.stellwerk.consent` as stored and its JSON."""

    binding: Binding
    drop: bool
    anonymous: bool
    stored: dict[str, Any]
    encoded: bytes


def stored_consent(consent: Consent, anonymous: bool) -> dict[str, Any]:
    """The consent as stored: `purposes` maps each purpose name to true, so that a rule needs
    several purposes by naming each (`{"analytics": [true], "advertising": [true]}` in one
    pattern ANDs them). Names a pattern could not require (with a dot) are left out."""
    return {
        "origin": consent.origin,
        "purposes": {name: True for name in sorted(consent.purposes) if PURPOSE.match(name)},
        "anonymous": anonymous,
    }


class VisitParts:
    """The parts' caches of one `Refiner` (one per process), shared by every source: what is
    kept by a part is the same for every source, but for the page's (kept with the source's
    own hosts) and the consent's (kept with the source's binding)."""

    def __init__(self, enricher: Enricher) -> None:
        self._enricher = enricher
        self._agents = _Kept()
        self._networks = _Kept()
        self._networks_generation = enricher.generation
        self._geos: dict[int, tuple[Geo, dict[str, Any], bytes]] = {}
        self._pages = _Kept()
        self._consents = _Kept()

    def agent(self, text: str) -> AgentPart:
        """The part of an agent (the request's or the payload's, uncut)."""
        text = text[:MAX_USER_AGENT]
        found: AgentPart | None = self._agents.found.get(text)
        if found is None:
            parsed = self._enricher.user_agent(text)
            stored = known(parsed)
            found = AgentPart(parsed, stored, _encode(stored))
            self._agents.keep(text, len(text), found)
        return found

    def network(self, ip: str, keep_full_ip: bool) -> NetworkPart:
        """The part of an address: kept whole (in canonical form) or anonymised, and the geo
        of its anonymised network, as `Enricher.enrich` gives them. Kept by the address, and
        an anonymised one also by its network: each visitor has an address of their own, but
        shares the network's part with the visitors of their /24 (/48)."""
        if self._networks_generation != self._enricher.generation:
            self._networks.clear()  # a replaced geo database: its answers are stale
            self._geos.clear()
            self._networks_generation = self._enricher.generation
        kept = self._networks.found
        found: NetworkPart | None = kept.get((ip, keep_full_ip))
        if found is not None:
            return found
        anonymised, _ = anonymise_ip(ip)
        if keep_full_ip and anonymised:
            found = self._network(canonical_ip(ip), anonymised)
        else:
            found = kept.get((anonymised, False))
            if found is None:
                found = self._network(anonymised, anonymised)
                self._networks.keep((anonymised, False), len(anonymised), found)
        if len(ip) <= MAX_PART_TEXT:
            self._networks.keep((ip, keep_full_ip), len(ip), found)
        return found

    def _network(self, kept: str, anonymised: str) -> NetworkPart:
        geo = self._enricher.geo(anonymised)
        # The enricher hands out one `Geo` per network from its cache (and one for all
        # addresses it knows nothing of): each is made JSON once, kept by its identity.
        found = self._geos.get(id(geo))
        if found is None or found[0] is not geo:
            stored = known(geo)
            if len(self._geos) >= PARTS_KEPT:
                self._geos.clear()
            found = self._geos[id(geo)] = (geo, stored, _encode(stored))
        return NetworkPart(kept, geo, found[1], _encode(kept), found[2])

    def page(self, url: str, referrer: str, internal_hosts: tuple[str, ...]) -> PagePart:
        """The part of a page and its referrer, for a source's own hosts."""
        key = (url, referrer, internal_hosts)
        found: PagePart | None = self._pages.found.get(key)
        if found is None:
            campaign = campaign_of(url)
            stored = known(campaign)
            referrer_kind = referrer_class(referrer, url, internal_hosts, campaign.medium)
            encoded = b',"campaign":' + _encode(stored) + b',"referrer":' + _encode(referrer_kind)
            found = PagePart(campaign, stored, referrer_kind, encoded)
            characters = len(url) + len(referrer)
            if characters <= MAX_PART_TEXT:
                self._pages.keep(key, characters + sum(map(len, internal_hosts)), found)
        return found

    def consent(self, consent: Consent, binding: Binding, policy: ConsentPolicy) -> ConsentPart:
        """The part of a consent under the policy of `binding` (the canonical one, kept by its
        identity; the entry holds it, so no other binding can take its id)."""
        key = (id(binding), consent.origin, consent.purposes)
        found: ConsentPart | None = self._consents.found.get(key)
        if found is None or found.binding is not binding:
            decision = decide(consent, policy)
            drop = isinstance(decision, Drop)
            anonymous = isinstance(decision, KeepAnonymous)
            stored = stored_consent(consent, anonymous)
            found = ConsentPart(binding, drop, anonymous, stored, _encode(stored))
            if len(consent.purposes) <= 64:
                self._consents.keep(key, sum(map(len, consent.purposes)), found)
        return found

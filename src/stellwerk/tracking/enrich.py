"""Enrichment on the collector path: user agent, bot flag, IP anonymisation, geo, campaign,
referrer class and keyed pseudonymisation, as pure functions over a `RequestContext`.

No step raises on bad input: a malformed user agent, address or URL yields empty ("unknown")
values. Everything that costs more than a few hundred nanoseconds sits behind a bounded cache,
because the whole of it must stay within 10 us of CPU per event (docs/tracking_enrichment.md).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote_plus

import msgspec
from ua_parser import Domain, load_lazy_builtins
from ua_parser.regex import Resolver

__all__ = [
    "Campaign",
    "Enricher",
    "Enrichment",
    "Geo",
    "GeoDatabase",
    "GeoLookup",
    "RequestContext",
    "SourcePrivacy",
    "UserAgent",
    "anonymise_ip",
    "campaign_of",
    "canonical_ip",
    "host_of",
    "pseudonymise",
    "referrer_class",
]

# A user agent longer than this is cut before parsing and caching: real ones stay well under
# it, and a megabyte of junk must neither cost regex time nor pin cache memory.
MAX_USER_AGENT = 512
UA_CACHE_SIZE = 10_000
# Geo results are cached per anonymised network (/24 or /48); see `Enricher.geo`.
GEO_CACHE_SIZE = 65_536


class RequestContext(msgspec.Struct, frozen=True):
    """What the collector knows of one event's request. The protocol adapters fill it: the
    user agent and addresses may come from the payload (Segment's ``context.userAgent``,
    Snowplow's ``ua``) rather than the request when a server-side SDK relays them."""

    ip: str = ""
    user_agent: str = ""
    url: str = ""
    referrer: str = ""
    headers: dict[str, str] = {}  # names in lower case
    payload: dict[str, Any] = {}


class SourcePrivacy(msgspec.Struct, frozen=True):
    """A source's enrichment settings: whether it may keep the full IP, which payload fields
    (dotted paths) are pseudonymised, and which hosts count as its own for the referrer class."""

    keep_full_ip: bool = False
    pseudonymise: tuple[str, ...] = ()
    internal_hosts: tuple[str, ...] = ()


class UserAgent(msgspec.Struct, frozen=True):
    browser: str = ""
    browser_version: str = ""
    os: str = ""
    os_version: str = ""
    device: str = ""
    device_brand: str = ""
    device_model: str = ""
    bot: bool = False


class Geo(msgspec.Struct, frozen=True):
    country: str = ""  # ISO 3166-1 alpha-2
    region: str = ""  # ISO 3166-2 subdivision code, without the country
    city: str = ""  # English name
    latitude: float | None = None
    longitude: float | None = None
    time_zone: str = ""


class Campaign(msgspec.Struct, frozen=True):
    source: str = ""
    medium: str = ""
    name: str = ""
    term: str = ""
    content: str = ""
    gclid: str = ""
    fbclid: str = ""


class Enrichment(msgspec.Struct, frozen=True):
    """What enrichment adds to an event. `ip` is anonymised unless the source keeps the full
    address; it is empty when the address was not a valid IPv4 or IPv6 address."""

    ip: str
    user_agent: UserAgent
    geo: Geo
    campaign: Campaign
    referrer: str  # search, social, email, internal, external or direct


UNKNOWN_UA = UserAgent()
UNKNOWN_GEO = Geo()
NO_CAMPAIGN = Campaign()


class GeoLookup(Protocol):
    """Anything that answers an address with a `Geo`; `GeoDatabase` reads an .mmdb file."""

    def lookup(self, ip: str) -> Geo: ...


class GeoDatabase:
    """A MaxMind-format database (GeoLite2/GeoIP2 City or Country), memory-mapped.

    `maxminddb` belongs to the `geoip` extra, so it is imported only when a database is given.
    """

    def __init__(self, path: Path | str) -> None:
        import maxminddb

        self._reader = maxminddb.open_database(str(path))

    def close(self) -> None:
        self._reader.close()

    def lookup(self, ip: str) -> Geo:
        try:
            record = self._reader.get(ip)
        except ValueError:  # not an address the database can take
            return UNKNOWN_GEO
        return geo_of(record) if isinstance(record, dict) else UNKNOWN_GEO


def geo_of(record: Mapping[str, Any]) -> Geo:
    """The fields Stellwerk keeps of a City (or Country) record, tolerating missing parts."""
    country = _dict(record.get("country"))
    location = _dict(record.get("location"))
    subdivisions = record.get("subdivisions")
    region = _dict(subdivisions[0]) if isinstance(subdivisions, list) and subdivisions else {}
    latitude, longitude = location.get("latitude"), location.get("longitude")
    return Geo(
        country=_str(country.get("iso_code")),
        region=_str(region.get("iso_code")),
        city=_str(_dict(_dict(record.get("city")).get("names")).get("en")),
        latitude=float(latitude) if isinstance(latitude, int | float) else None,
        longitude=float(longitude) if isinstance(longitude, int | float) else None,
        time_zone=_str(location.get("time_zone")),
    )


def _dict(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def anonymise_ip(ip: str) -> tuple[str, bool]:
    """The address with its last IPv4 octet, or all but its first 48 IPv6 bits, set to zero,
    and whether it was valid at all (("", False) when not). IPv4-mapped IPv6 addresses count
    as IPv4, so a dual-stack socket's ``::ffff:a.b.c.d`` loses its last octet too."""
    packed = _packed(ip)
    if packed is None:
        return "", False
    if len(packed) == 4:
        return socket.inet_ntop(socket.AF_INET, packed[:3] + b"\0"), True
    return socket.inet_ntop(socket.AF_INET6, packed[:6] + bytes(10)), True


_MAPPED_V4 = bytes(10) + b"\xff\xff"


def _packed(ip: str) -> bytes | None:
    # inet_pton is strict (no leading zeros, no zone ids) and far cheaper than ipaddress.
    try:
        if ":" not in ip:
            return socket.inet_pton(socket.AF_INET, ip)
        packed = socket.inet_pton(socket.AF_INET6, ip)
    except (OSError, ValueError):  # ValueError: an embedded NUL
        return None
    return packed[12:] if packed[:12] == _MAPPED_V4 else packed


def canonical_ip(ip: str) -> str:
    """The address in canonical form (IPv4-mapped IPv6 as IPv4), "" if it is none."""
    packed = _packed(ip)
    if packed is None:
        return ""
    return socket.inet_ntop(socket.AF_INET if len(packed) == 4 else socket.AF_INET6, packed)


_CAMPAIGN_KEYS = {
    "utm_source": "source",
    "utm_medium": "medium",
    "utm_campaign": "name",
    "utm_term": "term",
    "utm_content": "content",
    "gclid": "gclid",
    "fbclid": "fbclid",
}
MAX_CAMPAIGN_VALUE = 256
CAMPAIGN_CACHE_SIZE = 16_384
PSEUDONYM_CACHE_SIZE = 65_536
MAX_CACHED_TEXT = 2048  # longer URLs and values are worked out each time, never kept


def campaign_of(url: str) -> Campaign:
    """The UTM fields and click ids of a page URL's query (the first of each wins). Cached by
    the URL, up to `MAX_CACHED_TEXT` characters (so the cache's size stays bounded): a
    campaign's landing pages come with many visitors' events, and parsing a query costs more
    than the rest of the campaign step."""
    if len(url) <= MAX_CACHED_TEXT:
        return _cached_campaign(url)
    return _campaign(url)


@functools.lru_cache(maxsize=CAMPAIGN_CACHE_SIZE)
def _cached_campaign(url: str) -> Campaign:
    return _campaign(url)


def _campaign(url: str) -> Campaign:
    start = url.find("?")
    if start < 0:
        return NO_CAMPAIGN
    query = url[start + 1 :].split("#", 1)[0]
    lowered = query.lower()
    if "utm_" not in lowered and "clid=" not in lowered:
        return NO_CAMPAIGN
    found: dict[str, str] = {}
    for part in query.split("&"):
        key, _, value = part.partition("=")
        field = _CAMPAIGN_KEYS.get(key.lower())
        if field is not None and field not in found:
            found[field] = unquote_plus(value)[:MAX_CAMPAIGN_VALUE]
    return Campaign(**found) if found else NO_CAMPAIGN


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")


def host_of(url: str) -> str:
    """The host of an absolute URL in lower case without port or user info, "" if none.
    By hand rather than with urlsplit: this runs twice per event and urlsplit costs a
    microsecond."""
    start = url.find("//")
    if start < 0 or not _SCHEME.fullmatch(url, 0, start):
        return ""
    rest = url[start + 2 :]
    for stop in "/?#":
        rest = rest.split(stop, 1)[0]
    host = rest.rpartition("@")[2]
    if host.startswith("["):  # an IPv6 literal
        return host[1:].partition("]")[0].lower()
    return host.partition(":")[0].lower().rstrip(".")


SEARCH = frozenset(
    [
        "google",
        "bing",
        "yahoo",
        "yandex",
        "baidu",
        "duckduckgo",
        "ecosia",
        "qwant",
        "startpage",
        "naver",
        "seznam",
        "ask",
    ]
)
SOCIAL = frozenset(
    [
        "facebook",
        "instagram",
        "twitter",
        "linkedin",
        "pinterest",
        "reddit",
        "tiktok",
        "youtube",
        "xing",
        "threads",
        "snapchat",
        "tumblr",
        "vk",
        "whatsapp",
        "telegram",
        "mastodon",
    ]
)
SOCIAL_HOSTS = frozenset({"t.co", "x.com", "lnkd.in", "t.me", "bsky.app", "fb.me", "youtu.be"})
SEARCH_HOSTS = frozenset({"com.google.android.googlequicksearchbox"})  # android-app://
EMAIL_HOSTS = frozenset(
    {
        "mail.google.com",
        "outlook.live.com",
        "outlook.office.com",
        "outlook.office365.com",
        "com.google.android.gm",
    }
)
# Second-level labels under which a country's registrable names sit: google.co.uk, yahoo.co.jp.
_SECOND_LEVEL = frozenset({"co", "com", "org", "net", "ne", "or", "ac", "gov"})


@functools.lru_cache(maxsize=4096)
def _class_of_host(host: str) -> str:
    if host in EMAIL_HOSTS or host.startswith(("mail.", "webmail.", "email.")):
        return "email"
    if host in SOCIAL_HOSTS:
        return "social"
    if host in SEARCH_HOSTS:
        return "search"
    labels = host.removeprefix("www.").removeprefix("m.").split(".")
    if len(labels) < 2:
        return "external"
    brand = labels[-3] if len(labels) >= 3 and labels[-2] in _SECOND_LEVEL else labels[-2]
    if brand in SEARCH or (labels[0] == "search" and len(labels) >= 3):
        return "search"
    if brand in SOCIAL:
        return "social"
    return "external"


def referrer_class(
    referrer: str, url: str = "", internal_hosts: Iterable[str] = (), medium: str = ""
) -> str:
    """search, social, email, internal, external or direct. A ``utm_medium`` of email wins
    (webmail often sends no referrer); a referrer on the page's own host, a subdomain of it,
    or one of the source's hosts is internal; no referrer (or an unreadable one) is direct."""
    if medium.lower() == "email":
        return "email"
    host = host_of(referrer)
    if not host:
        return "direct"
    own = host_of(url).removeprefix("www.")
    bare = host.removeprefix("www.")
    if own and (bare == own or bare.endswith("." + own)):
        return "internal"
    for each in internal_hosts:
        each = each.lower().removeprefix("www.")
        if bare == each or bare.endswith("." + each):
            return "internal"
    return _class_of_host(host)


def pseudonymise(payload: dict[str, Any], fields: Iterable[str], key: bytes) -> dict[str, Any]:
    """`payload` with each listed field (a dotted path: ``userId``, ``context.traits.email``)
    replaced by the hex HMAC-SHA256 of its text under the tenant's `key`. The same value gives
    the same pseudonym within a tenant, so joins still work, and another key gives another one.
    Only the dicts on a changed path are copied; absent fields and null values stay as they are.
    """
    result = payload
    for path in fields:
        result = _replace(result, path.split("."), key)
    return result


def _replace(node: dict[str, Any], path: list[str], key: bytes) -> dict[str, Any]:
    head = path[0]
    if head not in node:
        return node
    value = node[head]
    if len(path) > 1:
        if not isinstance(value, dict):
            return node
        replaced: Any = _replace(value, path[1:], key)
        if replaced is value:
            return node
    elif value is None or isinstance(value, dict | list):
        return node
    else:
        text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
        replaced = pseudonym(key, text)
    copy = dict(node)
    copy[head] = replaced
    return copy


def pseudonym(key: bytes, text: str) -> str:
    """The hex HMAC-SHA256 of `text` under `key`. Cached (values up to `MAX_CACHED_TEXT`
    characters): a visitor's ids come with each of their events, and the HMAC is most of
    pseudonymisation's cost. The cache holds values and their pseudonyms in this process's
    memory only, as the messages themselves are."""
    if len(text) <= MAX_CACHED_TEXT:
        return _cached_pseudonym(key, text)
    return _hmac_hex(key, text)


@functools.lru_cache(maxsize=PSEUDONYM_CACHE_SIZE)
def _cached_pseudonym(key: bytes, text: str) -> str:
    return _hmac_hex(key, text)


def _hmac_hex(key: bytes, text: str) -> str:
    return hmac.digest(key, text.encode("utf-8", "surrogatepass"), hashlib.sha256).hex()


# Bot tokens that ua-parser's device rules ("Spider") do not all catch: HTTP libraries,
# headless browsers, monitors and link previews.
_BOT = re.compile(
    r"(?i)(?:bot\b|bot/|crawl|spider|slurp|headless|lighthouse|python-|curl/|wget/|"
    r"go-http-client|java/|okhttp|axios/|node-fetch|scrapy|phantomjs|facebookexternalhit|"
    r"preview|pingdom|uptime|monitor)"
)


class Enricher:
    """The enrichment steps with their caches: one per process, shared by every source.

    The user agent parser (ua-parser's Rust backend) costs several microseconds per string
    and is cached by the exact string; geo is cached per anonymised network.
    """

    def __init__(self, geo: GeoLookup | None = None, *, ua_cache_size: int = UA_CACHE_SIZE) -> None:
        self._resolver = Resolver(load_lazy_builtins())
        self._geo = geo
        self.user_agent = functools.lru_cache(maxsize=ua_cache_size)(self._parse_user_agent)
        self._geo_cached = functools.lru_cache(maxsize=GEO_CACHE_SIZE)(self._lookup)
        # Changes when cached answers are forgotten, so that callers' caches made of them go too.
        self.generation = 0

    def _parse_user_agent(self, text: str) -> UserAgent:
        if not text:
            return UNKNOWN_UA
        try:
            parsed = self._resolver(text, Domain.ALL)
        except UnicodeEncodeError:  # a lone surrogate, as the stdlib's json lets through
            parsed = self._resolver(text.encode("utf-8", "replace").decode(), Domain.ALL)
        agent, system, device = parsed.user_agent, parsed.os, parsed.device
        device_family = device.family if device else ""
        brand = (device.brand or "") if device else ""
        return UserAgent(
            browser=agent.family if agent else "",
            browser_version=_version(agent.major, agent.minor, agent.patch) if agent else "",
            os=system.family if system else "",
            os_version=_version(system.major, system.minor, system.patch) if system else "",
            device=device_family,
            device_brand=brand,
            device_model=(device.model or "") if device else "",
            # A phone brand (Cubot) may end in "bot": a known brand is a device, not a bot.
            bot=device_family == "Spider" or (not brand and _BOT.search(text) is not None),
        )

    def _lookup(self, network: str) -> Geo:
        assert self._geo is not None
        return self._geo.lookup(network)

    def geo(self, anonymised_ip: str) -> Geo:
        """Geo of an address's anonymised network. Looking up the /24 (/48) rather than the
        full address gives the same answer whether or not the source keeps full addresses,
        lets every visitor of a network share one cache entry (a City record costs ~6 us to
        decode), and loses precision only where the database splits a /24."""
        if self._geo is None or not anonymised_ip:
            return UNKNOWN_GEO
        return self._geo_cached(anonymised_ip)

    def geo_cache_clear(self) -> None:
        """Forget cached geo answers (after the database file is replaced)."""
        self._geo_cached.cache_clear()
        self.generation += 1

    def enrich(self, context: RequestContext, privacy: SourcePrivacy) -> Enrichment:
        anonymised, _ = anonymise_ip(context.ip)
        ip = canonical_ip(context.ip) if privacy.keep_full_ip and anonymised else anonymised
        user_agent = context.user_agent or context.headers.get("user-agent", "")
        campaign = campaign_of(context.url)
        return Enrichment(
            ip=ip,
            user_agent=self.user_agent(user_agent[:MAX_USER_AGENT]),
            geo=self.geo(anonymised),
            campaign=campaign,
            referrer=referrer_class(
                context.referrer, context.url, privacy.internal_hosts, campaign.medium
            ),
        )


def _version(*parts: str | None) -> str:
    """ "120.0.1" from ("120", "0", "1"); a missing part ends the version."""
    found: list[str] = []
    for part in parts:
        if not part:
            break
        found.append(part)
    return ".".join(found)

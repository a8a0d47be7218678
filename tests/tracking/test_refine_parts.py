"""A visit worked out by its parts (`refine_parts`) is what the documented steps give: for
random addresses, agents, pages, referrers, consents and source settings, the visit's
enrichment is `Enricher.enrich` of the request (anonymised first when the event is kept
anonymously), and its part of `context.stellwerk` the JSON of the members made of it, the
same on a first visit as on a visit of parts kept, and every cache stays within its bounds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.tracking.mmdb import city_record, write_mmdb
from tests.tracking.test_refine_visits import Countries
from tests.tracking.test_segment_reader import binding

from stellwerk.tracking import Binding, refine_parts
from stellwerk.tracking.consent import (
    Consent,
    Drop,
    KeepAnonymous,
    anonymise,
    consent_of,
    decide,
    listed_consent,
)
from stellwerk.tracking.enrich import Enricher, Geo, GeoDatabase, RequestContext
from stellwerk.tracking.model import PURPOSE
from stellwerk.tracking.refine import Refiner, Sender, visit_key

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
)
AGENTS = [
    CHROME,
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "Googlebot/2.1 (+http://www.google.com/bot.html)",
    "python-requests/2.31",
    "",
]
ADDRESSES = [
    "81.2.69.160",
    "81.2.69.7",
    "89.160.20.200",
    "2a02:8100::1",
    "2a02:8100:0:1::5",
    "::ffff:81.2.69.3",
    "10.0.0.1",
    "81.2.069.1",  # a leading zero: no address
    "not an address",
    "",
]
URLS = [
    "https://shop.example/p/1?utm_source=news&utm_medium=email&utm_campaign=bw",
    "https://shop.example/p/2?gclid=abc&utm_source=Google",
    "https://www.shop.example/",
    "",
    "junk",
]
REFERRERS = [
    "https://www.google.com/",
    "https://pay.example/return",
    "https://shop.example/cart",
    "https://t.co/x",
    "",
]
PURPOSES = ["analytics", "advertising", "personalisation", "Analytics ", "a.b", "x" * 70]


@pytest.fixture(scope="module")
def geo_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GeoDatabase]:
    path: Path = write_mmdb(
        tmp_path_factory.mktemp("geo") / "city.mmdb",
        {
            "81.2.69.0/24": city_record("DE", "Berlin", region="BE", latitude=52.5, longitude=13.4),
            "2a02:8100::/32": city_record("FR", "Paris", region="IDF"),
        },
    )
    database = GeoDatabase(path)
    yield database
    database.close()


@pytest.fixture(scope="module")
def enricher(geo_db: GeoDatabase) -> Enricher:
    """One for the module: its user agent parser takes ~0.15 s to build. Its own caches are
    the documented steps' (tests/tracking/test_enrich.py)."""
    return Enricher(geo_db)


def known(part: msgspec.Struct) -> dict[str, Any]:
    return {k: v for k, v in msgspec.structs.asdict(part).items() if v != "" and v is not None}


def expected(
    enricher: Enricher, request: RequestContext, source: Binding
) -> tuple[bool, bool, Any, bytes]:
    """What the documented steps (docs/tracking_enrichment.md) make of a request: dropped,
    kept anonymously, the enrichment, and `context.stellwerk`'s shared part."""
    refiner = Refiner(enricher, b"k" * 32)
    _, policy, privacy, anonymous_privacy = refiner.settings(source)
    consent = consent_of(request, policy)
    decision = decide(consent, policy)
    if isinstance(decision, Drop):
        return True, False, None, b""
    anonymous = isinstance(decision, KeepAnonymous)
    if anonymous:
        request, privacy = anonymise(request), anonymous_privacy
    enrichment = enricher.enrich(request, privacy)
    added = {
        "ip": enrichment.ip,
        "user_agent": known(enrichment.user_agent),
        "geo": known(enrichment.geo),
        "campaign": known(enrichment.campaign),
        "referrer": enrichment.referrer,
        "consent": {
            "origin": consent.origin,
            "purposes": {p: True for p in sorted(consent.purposes) if PURPOSE.match(p)},
            "anonymous": anonymous,
        },
    }
    return False, anonymous, enrichment, msgspec.json.encode(added)[:-1] + b","


sources = st.builds(
    binding,
    without_consent=st.sampled_from(["drop", "anonymous"]),
    full_ip=st.booleans(),
    consent_purposes=st.lists(st.sampled_from(PURPOSES[:3]), max_size=2).map(tuple),
    internal_hosts=st.lists(st.sampled_from(["pay.example", "Shop.Example"]), max_size=2).map(
        tuple
    ),
)
requests = st.builds(
    lambda ip, agent, url, referrer, header_agent, listed: RequestContext(
        ip=ip,
        user_agent=agent,
        url=url,
        referrer=referrer,
        headers={"user-agent": header_agent} if header_agent else {},
        payload={} if listed is None else {"context": {"consent": {"purposes": listed}}},
    ),
    st.sampled_from(ADDRESSES) | st.text(max_size=20),
    st.sampled_from(AGENTS) | st.text(max_size=30),
    st.sampled_from(URLS) | st.text(max_size=30),
    st.sampled_from(REFERRERS) | st.text(max_size=30),
    st.sampled_from(["", CHROME, "curl/8.0"]),
    st.none() | st.lists(st.sampled_from(PURPOSES), max_size=4),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(requests, sources), min_size=1, max_size=8))
def test_a_visit_by_its_parts_is_what_the_documented_steps_give(
    enricher: Enricher, visits: list[tuple[RequestContext, Binding]]
) -> None:
    refiner = Refiner(enricher, b"k" * 32)
    # Twice: the first pass fills the parts' caches, the second reads them (the visit cache
    # itself is bypassed: `_visit` works each out by its parts).
    for _ in range(2):
        for request, source in visits:
            canonical, policy, privacy, anonymous_privacy = refiner.settings(source)
            visit = refiner._visit(request, canonical, policy, privacy, anonymous_privacy)
            dropped, anonymous, enrichment, encoded = expected(enricher, request, source)
            assert (visit.enrichment is None) == dropped
            if dropped:
                continue
            assert visit.anonymous == anonymous
            assert visit.enrichment == enrichment
            assert visit.encoded == encoded
            assert msgspec.json.encode(visit.added)[:-1] + b"," == encoded


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(ADDRESSES), min_size=1, max_size=3),
    st.sampled_from(AGENTS),
    st.sampled_from(URLS),
    st.sampled_from(REFERRERS),
    st.none() | st.lists(st.sampled_from(PURPOSES), max_size=3),
    sources,
)
def test_the_segment_readers_visit_is_the_general_ways(
    enricher: Enricher,
    addresses: list[str],
    agent: str,
    url: str,
    referrer: str,
    listed: list[str] | None,
    source: Binding,
) -> None:
    """`Refiner.visit` (the Segment reader's, of a list of purposes) decides as `_visit` of
    a request whose payload states that list, for visitors of a network met one by one."""
    reader, general = Refiner(enricher, b"k" * 32), Refiner(enricher, b"k" * 32)
    for ip in addresses:
        sender: Sender = (ip, agent, url, referrer, {})
        canonical, policy, privacy, anonymous_privacy = general.settings(source)
        payload = {} if listed is None else {"context": {"consent": {"purposes": listed}}}
        request = RequestContext(*sender, payload=payload)
        want = general._visit(request, canonical, policy, privacy, anonymous_privacy)
        key = visit_key(listed or [], sender, id(reader.settings(source)[0]))
        assert key is not None
        got = reader.visit(key, sender, listed, source)
        assert (got.anonymous, got.enrichment, got.encoded, got.added) == (
            want.anonymous,
            want.enrichment,
            want.encoded,
            want.added,
        )


def test_a_list_of_purposes_is_kept_only_when_it_holds_short_names() -> None:
    assert listed_consent(["Analytics", "ads"]) == Consent(
        "tracker", frozenset({"analytics", "ads"})
    )
    assert listed_consent(["analytics", 1, None, ["x"]]) == Consent(
        "tracker", frozenset({"analytics"})
    )
    assert listed_consent([True]) == listed_consent([1]) == Consent("tracker", frozenset())
    long = "y" * 200
    assert listed_consent([long]) == Consent("tracker", frozenset())
    assert (long,) not in refine_parts_consents()


def refine_parts_consents() -> dict[tuple[object, ...], Consent]:
    from stellwerk.tracking import consent

    return consent._LISTED


def test_a_replaced_geo_database_is_never_answered_from_the_parts_kept() -> None:
    countries = Countries()
    enricher = Enricher(countries)
    parts = refine_parts.VisitParts(enricher)
    assert parts.network("81.2.69.160", False).geo == Geo(country="DE")
    countries.country = "FR"
    assert parts.network("81.2.69.160", False).geo == Geo(country="DE")  # kept
    enricher.geo_cache_clear()
    assert parts.network("81.2.69.160", False).geo == Geo(country="FR")
    assert parts.network("81.2.69.7", False).geo == Geo(country="FR")


def test_a_visitor_of_a_known_network_shares_its_part() -> None:
    parts = refine_parts.VisitParts(Enricher(Countries()))
    first = parts.network("81.2.69.160", False)
    assert parts.network("81.2.69.7", False) is first
    assert first.ip == "81.2.69.0"
    whole = parts.network("81.2.69.7", True)
    assert (whole.ip, whole.geo) == ("81.2.69.7", first.geo)
    assert parts.network("::ffff:81.2.69.9", True).ip == "81.2.69.9"


def test_each_cache_is_bounded_by_entries_and_characters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(refine_parts, "PARTS_KEPT", 8)
    monkeypatch.setattr(refine_parts, "PART_CHARACTERS", 1_000)
    parts = refine_parts.VisitParts(Enricher(Countries()))
    for n in range(100):
        parts.network(f"81.2.{n}.1", False)
        parts.agent(f"agent {n} " + "z" * 100)
        parts.page(f"https://shop.example/p/{n}", "", ())
    kept = [parts._networks, parts._agents, parts._pages]
    for each in kept:
        assert 0 < len(each.found) <= 8
        assert each.characters <= 1_000
    # Text longer than a part may be is worked out, never kept.
    long = "https://shop.example/?" + "q" * refine_parts.MAX_PART_TEXT
    parts.page(long, "", ())
    assert all(key[0] != long for key in parts._pages.found)

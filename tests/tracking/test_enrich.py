"""Enrichment: user agents and bots, IP anonymisation, geo from a real .mmdb file the tests
write themselves, campaign fields, referrer classes and keyed pseudonymisation."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import maxminddb
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from tests.tracking.mmdb import city_record, write_mmdb

from stellwerk.tracking.enrich import (
    MAX_CACHED_TEXT,
    Campaign,
    Enricher,
    Geo,
    GeoDatabase,
    RequestContext,
    SourcePrivacy,
    anonymise_ip,
    campaign_of,
    host_of,
    pseudonymise,
    referrer_class,
)

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.6099.109 Safari/537.36"
)
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1_2 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1"
)


@pytest.fixture(scope="module")
def geo_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GeoDatabase]:
    path = write_mmdb(
        tmp_path_factory.mktemp("geo") / "city.mmdb",
        {
            "81.2.69.0/24": city_record(
                "DE", "Berlin", region="BE", latitude=52.52, longitude=13.405
            ),
            "2a02:8100::/32": city_record("FR", "Paris", region="IDF"),
            "89.160.20.0/25": city_record("SE", "Linköping"),
            "89.160.20.128/25": city_record("SE", "Norrköping"),
            "175.16.199.0/24": {"country": {"iso_code": "CN"}},  # a Country database's record
        },
    )
    database = GeoDatabase(path)
    yield database
    database.close()


@pytest.fixture(scope="module")
def enricher(geo_db: GeoDatabase) -> Enricher:
    return Enricher(geo_db)


def test_a_browser_user_agent_is_parsed_into_browser_system_and_device(
    enricher: Enricher,
) -> None:
    chrome = enricher.user_agent(CHROME)
    assert (chrome.browser, chrome.browser_version) == ("Chrome", "120.0.6099")
    assert (chrome.os, chrome.os_version) == ("Windows", "10")
    assert not chrome.bot
    iphone = enricher.user_agent(IPHONE)
    assert (iphone.browser, iphone.os, iphone.os_version) == ("Mobile Safari", "iOS", "17.1.2")
    assert (iphone.device_brand, iphone.device_model) == ("Apple", "iPhone")


@pytest.mark.parametrize(
    "agent",
    [
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        "python-requests/2.31.0",
        "curl/8.5.0",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "HeadlessChrome/120.0.0.0 Safari/537.36",
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    ],
)
def test_crawlers_headless_browsers_and_http_libraries_are_bots(
    enricher: Enricher, agent: str
) -> None:
    assert enricher.user_agent(agent).bot


def test_a_phone_whose_brand_ends_in_bot_is_no_bot(enricher: Enricher) -> None:
    cubot = enricher.user_agent(
        "Mozilla/5.0 (Linux; Android 7.0; CUBOT MAGIC Build/NRD90M) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/64.0.3282.137 Mobile Safari/537.36"
    )
    assert cubot.device_brand == "Cubot"
    assert not cubot.bot


def test_the_user_agent_cache_is_bounded_and_hit_when_warm() -> None:
    enricher = Enricher(ua_cache_size=2)
    for version in range(5):
        enricher.user_agent(CHROME.replace("120", str(100 + version)))
    assert enricher.user_agent.cache_info().currsize == 2
    enricher.user_agent(CHROME.replace("120", "104"))
    assert enricher.user_agent.cache_info().hits == 1


@pytest.mark.parametrize(
    ("ip", "anonymised"),
    [
        ("81.2.69.160", "81.2.69.0"),
        ("2001:db8:85a3:1234:5678::1", "2001:db8:85a3::"),
        ("::ffff:81.2.69.160", "81.2.69.0"),  # a dual-stack socket's IPv4 peer
        ("2001:DB8::1", "2001:db8::"),
    ],
)
def test_ipv4_loses_its_last_octet_and_ipv6_all_but_its_first_48_bits(
    ip: str, anonymised: str
) -> None:
    assert anonymise_ip(ip) == (anonymised, True)


@given(st.ip_addresses())
def test_anonymising_keeps_exactly_the_network_part(address: object) -> None:
    assert isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 48
    network = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
    assert anonymise_ip(str(address)) == (str(network.network_address), True)


@pytest.mark.parametrize("ip", ["", "unknown", "1.2.3", "01.2.3.4", "256.1.1.1", "fe80::1%eth0"])
def test_what_is_no_address_anonymises_to_nothing(ip: str) -> None:
    assert anonymise_ip(ip) == ("", False)


def test_a_source_may_keep_the_full_address(enricher: Enricher) -> None:
    context = RequestContext(ip="2001:DB8:0:0::7", user_agent=CHROME)
    assert enricher.enrich(context, SourcePrivacy(keep_full_ip=True)).ip == "2001:db8::7"
    assert enricher.enrich(context, SourcePrivacy()).ip == "2001:db8::"
    bad = RequestContext(ip="not-an-ip")
    assert enricher.enrich(bad, SourcePrivacy(keep_full_ip=True)).ip == ""


def test_geo_comes_from_the_mmdb_file(enricher: Enricher) -> None:
    berlin = enricher.enrich(RequestContext(ip="81.2.69.160"), SourcePrivacy()).geo
    assert berlin == Geo(
        country="DE",
        region="BE",
        city="Berlin",
        latitude=52.52,
        longitude=13.405,
        time_zone="Europe/Berlin",
    )
    paris = enricher.enrich(RequestContext(ip="2a02:8100:1:2::9"), SourcePrivacy()).geo
    assert (paris.country, paris.region, paris.city) == ("FR", "IDF", "Paris")
    assert enricher.enrich(RequestContext(ip="175.16.199.3"), SourcePrivacy()).geo == Geo(
        country="CN"
    )


def test_an_address_the_database_does_not_hold_has_no_geo(enricher: Enricher) -> None:
    assert enricher.enrich(RequestContext(ip="192.0.2.1"), SourcePrivacy()).geo == Geo()
    assert enricher.enrich(RequestContext(ip="nonsense"), SourcePrivacy()).geo == Geo()
    assert Enricher().enrich(RequestContext(ip="81.2.69.160"), SourcePrivacy()).geo == Geo()


def test_geo_is_looked_up_for_the_anonymised_network(enricher: Enricher) -> None:
    # The database splits 89.160.20.0/24 in two; the lookup sees only 89.160.20.0, so a
    # visitor from the upper half is placed in the lower (docs/tracking_enrichment.md).
    upper = enricher.enrich(RequestContext(ip="89.160.20.200"), SourcePrivacy(keep_full_ip=True))
    assert upper.geo.city == "Linköping"


def test_campaign_fields_and_click_ids_come_from_the_page_url() -> None:
    url = (
        "https://shop.example/p/1?UTM_SOURCE=news+letter&utm_medium=email&utm_campaign=bw%2026"
        "&utm_term=shoes&utm_content=hero&gclid=Cj0K&fbclid=IwAR&utm_source=second#top"
    )
    assert campaign_of(url) == Campaign(
        source="news letter",
        medium="email",
        name="bw 26",
        term="shoes",
        content="hero",
        gclid="Cj0K",
        fbclid="IwAR",
    )
    assert campaign_of("https://shop.example/?UTM_SOURCE=Mail") == Campaign(source="Mail")
    assert campaign_of("https://shop.example/p/1?page=2") == Campaign()
    assert campaign_of("https://shop.example/p/1#utm_source=x") == Campaign()


@pytest.mark.parametrize(
    ("referrer", "expected"),
    [
        ("", "direct"),
        ("not a url", "direct"),
        ("https://www.google.com/", "search"),
        ("https://www.google.co.uk/search?q=shoes", "search"),
        ("https://duckduckgo.com/", "search"),
        ("https://search.brave.com/search?q=x", "search"),
        ("https://l.facebook.com/l.php?u=x", "social"),
        ("https://t.co/abc", "social"),
        ("https://www.linkedin.com/feed/", "social"),
        ("https://mail.google.com/mail/u/0/", "email"),
        ("android-app://com.google.android.gm/", "email"),
        ("https://www.shop.example/cart", "internal"),
        ("https://blog.shop.example/post", "internal"),
        ("https://checkout.partner-pay.example/done", "internal"),
        ("https://news.ycombinator.com/item?id=1", "external"),
    ],
)
def test_referrers_are_classed(referrer: str, expected: str) -> None:
    page = "https://shop.example/p/1"
    assert referrer_class(referrer, page, ["partner-pay.example"]) == expected


def test_an_email_campaign_is_email_even_without_a_referrer(enricher: Enricher) -> None:
    context = RequestContext(url="https://shop.example/?utm_medium=Email&utm_source=nl")
    assert enricher.enrich(context, SourcePrivacy()).referrer == "email"


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://user:pw@Shop.Example:8443/x?y#z", "shop.example"),
        ("http://[2001:db8::1]:8080/", "2001:db8::1"),
        ("//shop.example/x", ""),
        ("shop.example/x", ""),
    ],
)
def test_the_host_is_read_from_absolute_urls_only(url: str, host: str) -> None:
    assert host_of(url) == host


def test_listed_fields_are_pseudonymised_with_the_tenants_key() -> None:
    payload: dict[str, Any] = {
        "userId": "u-1",
        "context": {"traits": {"email": "a@shop.example"}},
        "n": 7,
    }
    fields = ["userId", "context.traits.email", "n", "missing.field", "userId.deeper"]
    first = pseudonymise(payload, fields, b"tenant-a key")
    expected = hmac.new(b"tenant-a key", b"a@shop.example", hashlib.sha256).hexdigest()
    assert first["context"]["traits"]["email"] == expected
    assert first["n"] == hmac.new(b"tenant-a key", b"7", hashlib.sha256).hexdigest()
    assert pseudonymise(payload, fields, b"tenant-a key") == first  # stable, so joins work
    other = pseudonymise(payload, fields, b"tenant-b key")
    assert other["userId"] != first["userId"]
    assert payload["userId"] == "u-1"  # the caller's dict is left alone
    assert payload["context"]["traits"]["email"] == "a@shop.example"


def test_cached_steps_answer_as_uncached_ones_and_keep_no_long_text() -> None:
    """Campaigns and pseudonyms are cached by their text up to MAX_CACHED_TEXT characters; a
    longer URL or value is worked out the same way and never kept (the caches stay bounded
    in bytes, whatever a client sends)."""
    long_url = "https://shop.example/?utm_source=news&pad=" + "x" * MAX_CACHED_TEXT
    assert campaign_of(long_url) == Campaign(source="news")
    assert campaign_of(long_url) is not campaign_of(long_url)  # made anew each time
    short = "https://shop.example/?utm_source=news"
    assert campaign_of(short) is campaign_of(short)
    long_value = "v" * (MAX_CACHED_TEXT + 1)
    for text in ("u-1", long_value):
        expected = hmac.new(b"k", text.encode(), hashlib.sha256).hexdigest()
        assert pseudonymise({"userId": text}, ["userId"], b"k")["userId"] == expected
        assert pseudonymise({"userId": text}, ["userId"], b"other")["userId"] != expected


def test_null_and_structured_values_are_not_pseudonymised() -> None:
    payload = {"userId": None, "traits": {"email": "x"}}
    assert pseudonymise(payload, ["userId", "traits"], b"k") is payload


def test_the_user_agent_falls_back_to_the_request_header(enricher: Enricher) -> None:
    context = RequestContext(headers={"user-agent": IPHONE})
    assert enricher.enrich(context, SourcePrivacy()).user_agent.os == "iOS"


# No deadline: the first example builds the shared enricher (~0.15 s, more under load).
@settings(deadline=None)
@example(ip="1.2.3.4\ud800", agent="Mozilla\ud800/5.0", url="?utm_source=%ff", referrer="x")
@given(
    ip=st.text(max_size=40),
    # Lone surrogates included: the stdlib's json decodes "\ud800" into one.
    agent=st.text(st.characters(exclude_categories=()), max_size=200),
    url=st.text(max_size=80),
    referrer=st.text(max_size=80),
)
def test_no_input_makes_enrichment_raise(ip: str, agent: str, url: str, referrer: str) -> None:
    enricher = _shared_enricher()
    result = enricher.enrich(
        RequestContext(ip=ip, user_agent=agent, url=url, referrer=referrer), SourcePrivacy()
    )
    assert result.referrer in {"search", "social", "email", "internal", "external", "direct"}
    if result.ip:
        ipaddress.ip_address(result.ip)
    pseudonymise({"userId": agent, "a": {"b": url}}, [ip, "userId", "a.b", referrer], b"k")


@given(st.text(alphabet="htps:/?&=#%+._-utm_sourceclidgfb0123456789[]@", max_size=120))
def test_urls_of_url_characters_never_raise(url: str) -> None:
    campaign_of(url)
    referrer_class(url, url)


_ENRICHER: list[Enricher] = []


def _shared_enricher() -> Enricher:
    # Hypothesis forbids function-scoped fixtures in @given tests; one parser will do.
    if not _ENRICHER:
        _ENRICHER.append(Enricher())
    return _ENRICHER[0]


def test_a_database_file_that_is_not_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "broken.mmdb"
    path.write_bytes(b"no database here")
    with pytest.raises(maxminddb.InvalidDatabaseError, match="MaxMind DB"):
        GeoDatabase(path)

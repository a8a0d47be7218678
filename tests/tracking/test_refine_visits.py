"""The refiner's cache by visit: a visitor's next event with the same consent list, address,
agent, page and referrer reuses the decision and enrichment of the one before, but never
across sources, after a source's settings change, for another consent, or after the geo
answers are forgotten."""

from __future__ import annotations

import copy
from typing import Any

import msgspec
import pytest

from stellwerk.refs import TenantId, TenantName, TenantRef
from stellwerk.tracking import Arrival, Binding, refine
from stellwerk.tracking.enrich import Enricher, Geo
from stellwerk.tracking.refine import Refiner

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
)
ARRIVAL = Arrival(received_at="2026-12-05T05:00:00Z", ip="127.0.0.1", headers={})


class Countries:
    """A geo lookup whose answer the test changes, as a replaced database would."""

    def __init__(self) -> None:
        self.country = "DE"

    def lookup(self, ip: str) -> Geo:
        return Geo(country=self.country)


def binding(**settings: Any) -> Binding:
    fields: dict[str, Any] = {
        "tenant": TenantRef(TenantId("t-1"), TenantName("acme")),
        "name": "shop",
        "kind": "segment",
        "bus": "default",
        "key_digest": "d",
        "allowed_origins": frozenset(),
        "without_consent": "drop",
        "full_ip": False,
        "pseudonymise": (),
        "consent_purposes": ("analytics",),
    }
    return Binding(**{**fields, **settings})


def track(purposes: list[str], user: str = "u-1") -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Viewed",
        "userId": user,
        "timestamp": "2026-12-05T04:59:00Z",
        "context": {
            "ip": "81.2.69.160",
            "userAgent": CHROME,
            "page": {"url": "https://shop.example/?utm_source=news", "referrer": ""},
            "consent": {"purposes": purposes},
        },
    }


def refined(refiner: Refiner, message: dict[str, Any], source: Binding) -> Any:
    return refiner(copy.deepcopy(message), ARRIVAL, source)


def stellwerk(message: Any) -> dict[str, Any]:
    member: dict[str, Any] = message["context"]["stellwerk"]
    return member


def test_a_visitors_next_event_is_refined_as_a_fresh_refiner_would() -> None:
    cached = Refiner(Enricher(), b"k" * 32)
    source = binding(pseudonymise=("userId",))
    for user in ("u-1", "u-2", "u-1"):
        message = track(["analytics"], user)
        got = refined(cached, message, source)
        assert got == refined(Refiner(Enricher(), b"k" * 32), message, source)
        assert got["userId"] != user  # pseudonymised per event, not taken from the visit
        assert stellwerk(got)["ip"] == "81.2.69.0"
        assert stellwerk(got)["campaign"] == {"source": "news"}


def test_another_consent_or_another_sources_settings_decide_again() -> None:
    refiner = Refiner(Enricher(), b"k" * 32)
    dropping = binding()
    assert refined(refiner, track([]), dropping) is None
    assert refined(refiner, track(["analytics"]), dropping) is not None
    # The same inputs under a source changed to keep events anonymously: a new binding.
    keeping = binding(without_consent="anonymous")
    anonymous = refined(refiner, track([]), keeping)
    assert anonymous is not None
    assert "userId" not in anonymous
    assert stellwerk(anonymous)["consent"]["anonymous"] is True
    # And back: the dropping source still drops, its decision was not overwritten.
    assert refined(refiner, track([]), dropping) is None


def test_forgotten_geo_answers_are_not_served_from_the_visit() -> None:
    countries = Countries()
    enricher = Enricher(countries)
    refiner = Refiner(enricher, b"k" * 32)
    source = binding()
    assert stellwerk(refined(refiner, track(["analytics"]), source))["geo"] == {"country": "DE"}
    countries.country = "FR"
    assert stellwerk(refined(refiner, track(["analytics"]), source))["geo"] == {"country": "DE"}
    enricher.geo_cache_clear()
    assert stellwerk(refined(refiner, track(["analytics"]), source))["geo"] == {"country": "FR"}


def test_the_shared_part_of_one_event_is_not_changed_by_the_next() -> None:
    refiner = Refiner(Enricher(), b"k" * 32)
    source = binding()
    first = refined(refiner, track(["analytics"], "u-1"), source)
    encoded = msgspec.json.encode(first)
    second = refined(refiner, track(["analytics"], "u-2"), source)
    assert stellwerk(second)["user_data"] != stellwerk(first)["user_data"]
    assert msgspec.json.encode(first) == encoded


def test_stored_encodes_byte_for_byte_as_the_refined_message() -> None:
    """`Refiner.stored` (what the collector plugs in) splices the visit's pre-encoded part of
    `context.stellwerk`: the stored bytes are those of `__call__`'s answer, on a visit's first
    event and on its next, kept anonymously, pseudonymised, with or without user data."""
    with_email = track(["analytics"], "u-9")
    with_email["traits"] = {"email": " Ann@Example.org "}
    no_context = {"type": "track", "event": "E", "anonymousId": "a-1"}
    sources = [
        binding(pseudonymise=("userId",)),
        binding(without_consent="anonymous"),
        binding(full_ip=True, consent_purposes=()),
        binding(kind="snowplow", consent_purposes=()),
    ]
    messages = [track(["analytics"]), track([]), with_email, no_context, track(["analytics"])]
    plain, stored = Refiner(Enricher(), b"k" * 32), Refiner(Enricher(), b"k" * 32)
    kept = 0
    for source in sources:
        for message in messages:
            expected = refined(plain, message, source)
            got = stored.stored(copy.deepcopy(message), ARRIVAL, source)
            if expected is None:
                assert got is None
                continue
            kept += 1
            assert isinstance(got, dict)
            assert isinstance(got["context"]["stellwerk"], msgspec.Raw)
            assert msgspec.json.encode(got) == msgspec.json.encode(expected)
    assert kept >= 15  # most cases are kept: the comparison above is not vacuous


def test_kept_visits_are_bounded_by_their_size_and_refined_the_same_when_cleared(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Visits are kept by their keys' text and encodings as well as by number: past
    `VISITS_SIZE` they start again empty, and an event refined after that is refined as a
    fresh refiner refines it."""
    monkeypatch.setattr(refine, "VISITS_SIZE", 2_000)
    cached = Refiner(Enricher(), b"k" * 32)
    parser = Enricher()  # for refiners that keep no visits yet (its parsing keeps none)
    source = binding()
    pages = [f"https://shop.example/{'p' * 300}/{n}?utm_source=news" for n in range(12)]
    for _ in range(2):
        for page in pages:
            message = track(["analytics"])
            message["context"]["page"]["url"] = page
            got = refined(cached, message, source)
            assert got == refined(Refiner(parser, b"k" * 32), message, source)
            assert 0 < cached._visits_size <= 2_000
            assert len(cached._visits) < len(pages)

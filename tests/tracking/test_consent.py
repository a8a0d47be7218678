"""Consent: TCF v2 strings decoded (published examples and strings encoded here), the places an
event states its consent, a source's decision per event, and destinations' purposes."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stellwerk.tracking.consent import (
    MAX_TCF_STRING,
    Consent,
    ConsentPolicy,
    Drop,
    Keep,
    KeepAnonymous,
    anonymise,
    consent_of,
    decide,
    decode_tcf,
    may_deliver,
)
from stellwerk.tracking.enrich import RequestContext

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def encode_tcf(
    *,
    purposes: Iterable[int] = (),
    interests: Iterable[int] = (),
    special: Iterable[int] = (),
    vendors: Iterable[int] = (),
    ranges: Iterable[tuple[int, int]] | None = None,
    cmp_id: int = 300,
    created: int = 17_330_000_000,
    language: str = "DE",
    publisher: str = "DE",
    policy: int = 4,
    version: int = 2,
    cut_after_core_fields: bool = False,
) -> str:
    """A TCF v2 core segment, written bit by bit as the IAB's format describes it: vendors as
    a bit field, or as range entries when `ranges` is given. Legitimate-interest vendors and
    publisher restrictions follow as empty sections."""
    vendor_list = sorted(set(vendors))

    def flags(values: Iterable[int], width: int) -> str:
        chosen = set(values)
        return "".join("1" if n in chosen else "0" for n in range(1, width + 1))

    def letters(text: str) -> str:
        return "".join(f"{ord(c) - 65:06b}" for c in text)

    bits = [
        f"{version:06b}",
        f"{created:036b}",
        f"{created:036b}",
        f"{cmp_id:012b}",
        f"{7:012b}",  # CMP version
        f"{1:06b}",  # consent screen
        letters(language),
        f"{150:012b}",  # vendor list version
        f"{policy:06b}",
        "0",  # service specific
        "0",  # non-standard stacks
        flags(special, 12),
        flags(purposes, 24),
        flags(interests, 24),
        "0",  # purpose one treatment
        letters(publisher),
    ]
    if not cut_after_core_fields:
        if ranges is None:
            top = vendor_list[-1] if vendor_list else 0
            bits += [f"{top:016b}", "0", flags(vendor_list, top)]
        else:
            entries = list(ranges)
            top = max((end for _, end in entries), default=0)
            bits += [f"{top:016b}", "1", f"{len(entries):012b}"]
            for start, end in entries:
                one = start == end
                bits += ["0" if one else "1", f"{start:016b}", "" if one else f"{end:016b}"]
        bits += [f"{0:016b}", "0", f"{0:012b}"]  # no LI vendors, no restrictions
    text = "".join(bits)
    text += "0" * (-len(text) % 6)
    return "".join(ALPHABET[int(text[i : i + 6], 2)] for i in range(0, len(text), 6))


# Published examples: the fixtures of LiveRamp's iabconsent (Go), made with the IAB's encoder
# at iabtcf.com; the values are the ones that project asserts.
PUBLISHED = {
    "COvzTO5OvzTO5BRAAAENAPCoALIAADgAAAAAAewAwABAAlAB6ABBFADBQAQA9hAAAcAA": {
        "cmp_id": 81,
        "cmp_version": 0,
        "consent_screen": 0,
        "consent_language": "EN",
        "vendor_list_version": 15,
        "policy_version": 2,
        "service_specific": True,
        "special_features": {1},
        "purposes": {1, 3, 4, 7},
        "legitimate_interests": {3, 4, 5},
        "purpose_one_treatment": False,
        "publisher_country": "AA",
        "vendors": ((2, 2), (37, 37), (61, 61)),
    },
    "COvzTO5OvzTO5B7ABCENAPEYAIAAAIAAAIqIAAoAAoAA.QAAo.IAAo": {
        "cmp_id": 123,
        "cmp_version": 1,
        "consent_screen": 2,
        "consent_language": "EN",
        "vendor_list_version": 15,
        "policy_version": 4,
        "service_specific": False,
        "special_features": {1},
        "purposes": {1},
        "legitimate_interests": {1},
        "purpose_one_treatment": True,
        "publisher_country": "FR",
        "vendors": ((1, 1),),
    },
}
# A vendor bit field of 720 vendors (GB, no purposes at all).
BITFIELD_EXAMPLE = (
    "COvzTO5OvzTO5BZAFMENAPCgAAAAAAAAAAwIFoEUQQgAIQwgIwQABAEAAAAOIAACAIAAAAQAIAgEAACEAAAAAgAQ"
    "BAAAAAAAGBAAgAAAAAAAFAAECAAAgAAQARAEQAAAAAJAAIAAgAAAYQEAAAQmAgBC3ZAYzUwLQIoghAAQhhARggACA"
    "IAAAAcQAAEAQAAAAgAQBAIAAEIAAAABAAgCAAAAAAAMCABAAAAAAAAKAAIEAABAAAgAiAIgAAAAASAAQABAAAAwg"
    "IAAAhMBACFuyAxmpgAA"
)


@pytest.mark.parametrize("text", list(PUBLISHED))
def test_published_example_strings_decode_to_their_published_values(text: str) -> None:
    decoded = decode_tcf(text)
    assert decoded is not None
    assert decoded.version == 2
    assert decoded.created == decoded.last_updated == 15_834_362_809  # 2020-03-05 19:24:40.9
    for field, expected in PUBLISHED[text].items():
        value = getattr(decoded, field)
        assert (set(value) if isinstance(value, frozenset) else value) == expected, field


def test_the_fields_on_character_boundaries_read_by_hand() -> None:
    # Each character holds 6 bits, so the fields that start at a multiple of 6 can be read
    # off the characters: version at bit 0 (char 0), created at 6 (chars 1-6), CMP id at 78
    # (chars 13-14), language at 108 (chars 18-19), vendor list version at 120 (chars 20-21).
    text = "COvzTO5OvzTO5B7ABCENAPEYAIAAAIAAAIqIAAoAAoAA"
    value = [ALPHABET.index(c) for c in text]
    assert value[0] == 2  # "C": version 2
    assert value[13] * 64 + value[14] == 1 * 64 + 59 == 123  # "B7"
    assert (chr(65 + value[18]), chr(65 + value[19])) == ("E", "N")  # "EN", as written
    assert value[20] * 64 + value[21] == 0 * 64 + 15  # "AP"
    created = 0
    for each in value[1:7]:  # "OvzTO5"
        created = created * 64 + each
    decoded = decode_tcf(text)
    assert decoded is not None
    assert (decoded.cmp_id, decoded.consent_language) == (123, "EN")
    assert (decoded.vendor_list_version, decoded.created) == (15, created)


def test_a_published_vendor_bit_field_decodes_into_ranges() -> None:
    decoded = decode_tcf(BITFIELD_EXAMPLE)
    assert decoded is not None
    assert (decoded.cmp_id, decoded.consent_screen, decoded.publisher_country) == (89, 12, "GB")
    assert decoded.purposes == frozenset()
    assert decoded.vendors is not None
    assert decoded.vendors[:4] == ((2, 2), (6, 6), (8, 8), (12, 12))
    assert decoded.vendors[-1] == (719, 720)
    assert decoded.has_vendor(129)
    assert decoded.has_vendor(720)
    assert not decoded.has_vendor(130)
    assert not decoded.has_vendor(721)


@given(
    purposes=st.sets(st.integers(1, 24)),
    interests=st.sets(st.integers(1, 24)),
    special=st.sets(st.integers(1, 12)),
    vendors=st.sets(st.integers(1, 2000), max_size=40),
    as_ranges=st.booleans(),
)
def test_what_the_encoder_writes_decodes_back(
    purposes: set[int], interests: set[int], special: set[int], vendors: set[int], as_ranges: bool
) -> None:
    ranges = [(v, v) for v in vendors] if as_ranges else None
    decoded = decode_tcf(
        encode_tcf(
            purposes=purposes, interests=interests, special=special, vendors=vendors, ranges=ranges
        )
    )
    assert decoded is not None
    assert (decoded.purposes, decoded.legitimate_interests) == (
        frozenset(purposes),
        frozenset(interests),
    )
    assert decoded.special_features == special
    assert decoded.vendors is not None
    assert {v for start, end in decoded.vendors for v in range(start, end + 1)} == vendors
    assert (decoded.cmp_id, decoded.consent_language, decoded.policy_version) == (300, "DE", 4)


def test_overlapping_vendor_ranges_are_merged() -> None:
    decoded = decode_tcf(encode_tcf(ranges=[(50, 60), (1, 10), (55, 80), (11, 11)]))
    assert decoded is not None
    assert decoded.vendors == ((1, 11), (50, 80))


def test_the_widest_range_section_decodes_at_once() -> None:
    # As many entries as fit in the longest string taken, each spanning every vendor id:
    # held as ranges, never expanded into 45 million vendor ids.
    text = encode_tcf(ranges=[(1, 65_535)] * 700)
    assert len(text) <= MAX_TCF_STRING
    started = time.process_time()
    decoded = decode_tcf(text)
    assert time.process_time() - started < 0.5
    assert decoded is not None
    assert decoded.vendors == ((1, 65_535),)


def test_a_string_that_ends_before_its_vendors_keeps_its_purposes() -> None:
    decoded = decode_tcf(encode_tcf(purposes={1, 8}, cut_after_core_fields=True))
    assert decoded is not None
    assert decoded.purposes == {1, 8}
    assert decoded.vendors is None
    assert not decoded.has_vendor(1)


def test_a_range_entry_that_makes_no_sense_leaves_vendors_unknown() -> None:
    decoded = decode_tcf(encode_tcf(purposes={1}, ranges=[(0, 0)]))
    assert decoded is not None
    assert (decoded.purposes, decoded.vendors) == (frozenset({1}), None)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "COvzTO5",  # cut inside the core fields
        "COvzTO5OvzTO5B7ABCENAPEYAIAAAIAAAIqIAAoAA+oAA",  # "+" is not base64url
        "BOEFEAyOEFEAyAHABDENAI4AAAB9vABAASA",  # a TCF v1 string
        "C" * 5000,  # longer than any real one
        "Z" * 37,  # version 25
    ],
)
def test_what_is_not_a_tcf_v2_string_decodes_to_nothing(text: str) -> None:
    assert decode_tcf(text) is None


@given(st.text(max_size=200))
def test_no_text_makes_the_decoder_raise(text: str) -> None:
    decode_tcf(text)


@given(st.text(alphabet=ALPHABET, min_size=36, max_size=120))
def test_no_base64url_text_makes_the_decoder_raise(text: str) -> None:
    decoded = decode_tcf("C" + text)
    if decoded is not None:
        assert decoded.purposes <= set(range(1, 25))


def context(consent: dict[str, Any] | None = None, **more: Any) -> RequestContext:
    payload: dict[str, Any] = {"type": "track", "event": "Order Completed", "userId": "u-1"}
    if consent is not None:
        payload["context"] = {"consent": consent}
    payload.update(more.pop("payload", {}))
    return RequestContext(payload=payload, **more)


POLICY = ConsentPolicy(required=("analytics",))


def test_the_tracker_lists_its_purposes_in_the_events_context() -> None:
    found = consent_of(context({"purposes": [" Analytics", "functional", 7, "", "  "]}), POLICY)
    assert found == Consent("tracker", frozenset({"analytics", "functional"}))


def test_segments_category_preferences_count_where_they_are_true() -> None:
    preferences = {"Analytics": True, "Advertising": False, "Functional": "yes"}
    found = consent_of(context({"categoryPreferences": preferences}), POLICY)
    assert found == Consent("tracker", frozenset({"analytics"}))


def test_a_tcf_string_grants_its_purposes_and_the_names_they_add_up_to() -> None:
    text = encode_tcf(purposes={1, 8, 9}, vendors={755})
    found = consent_of(context({"tcString": text}), POLICY)
    assert found.origin == "tcf"
    assert found.purposes == {"tcf:1", "tcf:8", "tcf:9", "analytics"}
    assert found.tcf is not None
    assert found.tcf.has_vendor(755)
    mapped = ConsentPolicy(tcf_purposes={"stats": (9,)})
    assert consent_of(context({"tcString": text}), mapped).purposes == {
        "tcf:1",
        "tcf:8",
        "tcf:9",
        "stats",
    }


def test_a_tcf_string_may_come_as_gdpr_consent_or_in_the_iab_cookie() -> None:
    text = encode_tcf(purposes={1, 8})
    by_parameter = consent_of(context(payload={"gdpr_consent": text}), POLICY)
    cookie = f'session=abc; euconsent-v2="{text}"; other=1'
    by_cookie = consent_of(context(headers={"cookie": cookie}), POLICY)
    assert by_parameter.purposes == by_cookie.purposes == {"tcf:1", "tcf:8", "analytics"}


def test_the_events_own_statement_wins_over_the_cookie() -> None:
    cookie = f"euconsent-v2={encode_tcf(purposes=range(1, 12))}"
    found = consent_of(context({"purposes": ["functional"]}, headers={"cookie": cookie}), POLICY)
    assert found == Consent("tracker", frozenset({"functional"}))


def test_an_unreadable_consent_string_is_no_consent() -> None:
    found = consent_of(context({"tcString": "garbage!"}), POLICY)
    assert found == Consent()
    assert consent_of(context(), POLICY) == Consent()


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(
                st.sampled_from(
                    ["context", "consent", "purposes", "categoryPreferences", "tcString"]
                ),
                inner,
                max_size=4,
            )
        ),
        max_leaves=12,
    ),
    st.text(max_size=60),
)
def test_no_payload_makes_consent_reading_raise(value: Any, cookie: str) -> None:
    payload = {"context": value, "gdpr_consent": value}
    request = RequestContext(ip=cookie, payload=payload, headers={"cookie": cookie})
    decide(consent_of(request, POLICY), POLICY)
    assert "cookie" not in anonymise(request).headers


def test_an_event_with_the_required_purposes_is_kept_as_is() -> None:
    decision = decide(Consent("tracker", frozenset({"analytics", "advertising"})), POLICY)
    assert decision == Keep()
    assert decision.sets_cookie


def test_without_consent_a_source_drops_or_keeps_anonymously_as_it_says() -> None:
    lacking = Consent("tracker", frozenset({"functional"}))
    kept = decide(lacking, POLICY)
    assert kept == KeepAnonymous(missing=("analytics",))
    assert not kept.sets_cookie
    dropped = decide(Consent(), ConsentPolicy(required=("analytics", "ads"), without="drop"))
    assert dropped == Drop(missing=("ads", "analytics"))
    assert not dropped.sets_cookie


def test_a_source_that_requires_nothing_keeps_every_event() -> None:
    assert decide(Consent(), ConsentPolicy()) == Keep()


def test_a_destination_gets_only_events_with_the_purposes_it_needs() -> None:
    analytics = Consent("tracker", frozenset({"analytics"}))
    assert may_deliver(analytics, ["analytics"])
    assert not may_deliver(analytics, ["analytics", "advertising"])
    assert not may_deliver(Consent(), ["analytics"])
    assert may_deliver(Consent(), [])


def test_a_destination_with_a_tcf_vendor_id_needs_that_vendors_consent() -> None:
    policy = ConsentPolicy()
    with_google = consent_of(
        context({"tcString": encode_tcf(purposes={1, 8}, vendors={755})}), policy
    )
    without = consent_of(context({"tcString": encode_tcf(purposes={1, 8}, vendors={12})}), policy)
    unknown = consent_of(
        context({"tcString": encode_tcf(purposes={1, 8}, cut_after_core_fields=True)}), policy
    )
    assert may_deliver(with_google, ["analytics"], tcf_vendor=755)
    assert not may_deliver(without, ["analytics"], tcf_vendor=755)
    assert not may_deliver(unknown, ["analytics"], tcf_vendor=755)
    # A tracker's purpose list says nothing of vendors: its purposes decide alone.
    assert may_deliver(Consent("tracker", frozenset({"analytics"})), ["analytics"], 755)


def test_anonymising_strips_ids_traits_cookies_and_the_last_octet() -> None:
    payload: dict[str, Any] = {
        "type": "identify",
        "userId": "u-1",
        "anonymousId": "a-1",
        "traits": {"email": "a@shop.example"},
        "properties": {"total": 20},
        "context": {
            "ip": "81.2.69.160",
            "traits": {"name": "A"},
            "device": {"id": "d-1", "advertisingId": "ad-1", "manufacturer": "Apple"},
            "page": {"url": "https://shop.example/"},
        },
    }
    request = RequestContext(
        ip="2001:db8:85a3:1::5",
        headers={"cookie": "sw_vid=v-1", "user-agent": "x"},
        payload=payload,
    )
    anonymous = anonymise(request)
    assert anonymous.ip == "2001:db8:85a3::"
    assert anonymous.headers == {"user-agent": "x"}
    assert anonymous.payload == {
        "type": "identify",
        "properties": {"total": 20},
        "context": {
            "ip": "81.2.69.0",
            "device": {"manufacturer": "Apple"},
            "page": {"url": "https://shop.example/"},
        },
    }
    assert payload["userId"] == "u-1"  # the request itself is left alone
    assert payload["context"]["device"]["id"] == "d-1"


def test_anonymising_strips_snowplows_ids_too() -> None:
    payload = {"e": "pv", "uid": "u", "duid": "d", "nuid": "n", "sid": "s", "ip": "1.2.3.4"}
    assert anonymise(RequestContext(payload=payload)).payload == {"e": "pv", "ip": "1.2.3.0"}


def test_a_consent_survives_json_so_that_delivery_can_check_it_later() -> None:
    text = encode_tcf(purposes={1, 8}, vendors={755, 756})
    found = consent_of(context({"tcString": text}), POLICY)
    again = msgspec.json.decode(msgspec.json.encode(found), type=Consent)
    assert again == found
    assert may_deliver(again, ["analytics"], tcf_vendor=756)

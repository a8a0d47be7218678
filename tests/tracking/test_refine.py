"""Consent and enrichment on the collector path, through the real app: what a source's settings
make of a message before it is stored, in `data.context.stellwerk`."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import msgspec
import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import create_async_engine
from tests.conftest import RunningApp, app_running
from tests.tracking.mmdb import city_record, write_mmdb
from tests.tracking.support import bus_events, make_source
from tests.tracking.test_consent import encode_tcf

from stellwerk.capability import Database
from stellwerk.config import ConfigError, load_settings
from stellwerk.refs import TenantId, TenantName, TenantRef
from stellwerk.secrets import derive_key, load_or_create_key
from stellwerk.storage.control import migrate
from stellwerk.tracking import CAPABILITY, Arrival, Binding, TrackingOpened
from stellwerk.tracking.enrich import Enricher
from stellwerk.tracking.opened import MIGRATIONS
from stellwerk.tracking.refine import Refiner
from stellwerk.tracking.store import SourceStore
from stellwerk.tracking.tables import VERSION_TABLE

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
)


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[RunningApp]:
    geo = write_mmdb(
        tmp_path / "city.mmdb",
        {"81.2.69.0/24": city_record("DE", "Berlin", region="BE", latitude=52.5, longitude=13.4)},
    )
    settings = load_settings({"data_dir": str(tmp_path / "data"), "geoip_db": str(geo)})
    async with app_running(settings) as running:
        yield running


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def track(message_id: str, **more: Any) -> dict[str, Any]:
    return {"type": "track", "event": "Order Completed", "messageId": message_id, **more}


async def stored(app: RunningApp) -> dict[str, dict[str, Any]]:
    """The stored messages by id."""
    return {e["id"]: e["data"] for e in await bus_events(app)}


async def test_a_message_is_enriched_and_its_address_anonymised_before_it_is_stored(
    app: RunningApp,
) -> None:
    key = await make_source(
        app.client,
        app.admin,
        internal_hosts=["Pay.Example"],
        allowed_origins=["https://shop.example"],
    )
    context = {
        "ip": "81.2.69.160",
        "userAgent": CHROME,
        "page": {
            "url": "https://shop.example/p?utm_source=news&UTM_MEDIUM=cpc&gclid=g1",
            "referrer": "https://www.google.de/search?q=shoes",
        },
        "library": {"name": "analytics.js"},
    }
    messages = [
        track("m1", userId="u1", context=context, timestamp="2026-12-04T10:00:00Z"),
        # A shop's backend: its own agent is not the visitor's, so the agent is unknown.
        track("m3", userId="u3"),
    ]
    headers = {**basic(key), "User-Agent": "python-requests/2.32"}
    answer = await app.client.post("/v1/batch", headers=headers, json={"batch": messages})
    assert answer.json() == {"success": True}
    # From a browser's request itself: the peer's address, the User-Agent header (a headless
    # one here), an internal host.
    page = {"page": {"url": "https://shop.example/", "referrer": "https://pay.example/x"}}
    browser = {**basic(key), "User-Agent": "HeadlessChrome/120", "Origin": "https://shop.example"}
    answer = await app.client.post(
        "/v1/track", headers=browser, json=track("m2", anonymousId="a1", context=page)
    )
    assert answer.json() == {"success": True}

    found = await stored(app)
    first = found["m1"]["context"]
    added = first.pop("stellwerk")
    # Segment's own context stays recognisable; only the address is cut to its /24.
    assert first == {**context, "ip": "81.2.69.0"}
    assert added["ip"] == "81.2.69.0"
    assert (added["user_agent"]["browser"], added["user_agent"]["os"]) == ("Chrome", "Windows")
    assert added["user_agent"]["bot"] is False
    assert (added["geo"]["country"], added["geo"]["city"], added["geo"]["region"]) == (
        "DE",
        "Berlin",
        "BE",
    )
    assert added["campaign"]["source"] == "news"
    assert added["campaign"]["medium"] == "cpc"
    assert added["campaign"]["gclid"] == "g1"
    assert added["referrer"] == "search"
    assert added["consent"] == {"origin": "none", "purposes": {}, "anonymous": False}
    assert added["event_time"] == 1_796_378_400  # 2026-12-04T10:00:00Z
    assert added["user_data"] == {
        "external_id": [hashlib.sha256(b"u1").hexdigest()],
        "client_ip_address": "81.2.69.0",
        "client_user_agent": CHROME,
    }
    second = found["m2"]["context"]["stellwerk"]
    assert second["user_agent"]["bot"] is True  # headless, from the request's header
    assert second["referrer"] == "internal"
    assert second["ip"] == "127.0.0.0"  # the in-process client's address, anonymised
    assert second["geo"] == {}  # unknown values are left out
    assert second["campaign"] == {}
    server = found["m3"]["context"]["stellwerk"]
    assert server["user_agent"] == {"bot": False}  # unknown, but never without the bot flag
    assert "client_user_agent" not in server["user_data"]


async def test_a_source_that_allows_the_full_address_keeps_it(app: RunningApp) -> None:
    key = await make_source(app.client, app.admin, full_ip=True)
    message = track("m1", userId="u1", context={"ip": "81.2.69.160"})
    assert (await app.client.post("/v1/track", headers=basic(key), json=message)).is_success
    data = (await stored(app))["m1"]
    assert data["context"]["ip"] == "81.2.69.160"
    assert data["context"]["stellwerk"]["ip"] == "81.2.69.160"
    assert data["context"]["stellwerk"]["geo"]["city"] == "Berlin"


async def test_without_the_required_purposes_a_source_drops_the_event(app: RunningApp) -> None:
    key = await make_source(
        app.client, app.admin, consent_purposes=["analytics"], without_consent="drop"
    )
    batch = [
        track("given", userId="u1", context={"consent": {"purposes": ["Analytics", "ads"]}}),
        track("refused", userId="u2", context={"consent": {"purposes": ["ads"]}}),
        track("silent", userId="u3"),
    ]
    answer = await app.client.post("/v1/batch", headers=basic(key), json={"batch": batch})
    assert answer.json() == {"success": True}  # dropped ones are taken: no SDK retries them
    found = await stored(app)
    assert list(found) == ["given"]
    assert found["given"]["userId"] == "u1"
    assert found["given"]["context"]["stellwerk"]["consent"] == {
        "origin": "tracker",
        "purposes": {"ads": True, "analytics": True},
        "anonymous": False,
    }


async def test_without_the_required_purposes_a_source_keeps_the_event_anonymously(
    app: RunningApp,
) -> None:
    key = await make_source(
        app.client,
        app.admin,
        consent_purposes=["analytics"],
        without_consent="anonymous",
        full_ip=True,
    )
    message = track(
        "anon",
        userId="u1",
        anonymousId="a1",
        traits={"email": "x@example.com"},
        context={"ip": "81.2.69.160", "traits": {"email": "x@example.com"}, "device": {"id": "d"}},
    )
    headers = {**basic(key), "Cookie": "ajs_user_id=u1"}
    assert (await app.client.post("/v1/track", headers=headers, json=message)).is_success
    data = (await stored(app))["anon"]
    for member in ("userId", "anonymousId", "traits"):
        assert member not in data
    added = data["context"].pop("stellwerk")
    # The full address a source allows is for consented events only.
    assert data["context"] == {"ip": "81.2.69.0", "device": {}}
    assert added["ip"] == "81.2.69.0"
    assert added["consent"] == {"origin": "none", "purposes": {}, "anonymous": True}
    assert "em" not in added["user_data"]
    assert "external_id" not in added["user_data"]
    assert added["geo"]["city"] == "Berlin"  # geo of the network, as for every event


async def test_a_tcf_string_grants_the_purposes_the_source_names(app: RunningApp) -> None:
    key = await make_source(
        app.client,
        app.admin,
        consent_purposes=["measure"],
        tcf_purposes={"measure": [1, 7]},
        without_consent="drop",
    )
    granted = encode_tcf(purposes=[1, 7], vendors=[755])
    short = encode_tcf(purposes=[1])
    batch = [
        track("tcf-yes", userId="u1", context={"consent": {"tcString": granted}}),
        track("tcf-no", userId="u2", context={"consent": {"tcString": short}}),
    ]
    cookie = {"Cookie": f"euconsent-v2={granted}"}
    assert (
        await app.client.post("/v1/batch", headers=basic(key), json={"batch": batch})
    ).is_success
    # The IAB's cookie counts when the event itself says nothing.
    assert (
        await app.client.post(
            "/v1/track", headers={**basic(key), **cookie}, json=track("cookie", userId="u3")
        )
    ).is_success
    found = await stored(app)
    assert sorted(found) == ["cookie", "tcf-yes"]
    consent = found["tcf-yes"]["context"]["stellwerk"]["consent"]
    assert consent["origin"] == "tcf"
    assert consent["purposes"] == {"measure": True, "tcf:1": True, "tcf:7": True}


async def test_listed_fields_are_pseudonymised_with_a_key_of_the_tenant(app: RunningApp) -> None:
    other = await app.services.platform.tenants.create("other")
    message = track("m1", userId="u1", properties={"email": "x@example.com", "total": 5})
    pseudonyms = []
    keys = []
    for admin, tenant in ((app.admin, "default"), (app.auth(other.admin_key), "other")):
        key = await make_source(
            app.client, admin, pseudonymise=["userId", "properties.email"], full_ip=False
        )
        keys.append(key)
        assert (await app.client.post("/v1/track", headers=basic(key), json=message)).is_success
        (event,) = await bus_events(app, tenant=tenant)
        data = event["data"]
        assert event["subject"] == data["userId"]  # erasure by subject names the pseudonym
        assert data["properties"]["total"] == 5
        assert len(data["userId"]) == 64
        assert data["userId"] != "u1"
        assert len(data["properties"]["email"]) == 64
        # The Meta-style hash is of what is stored: the pseudonym, never the raw id.
        hashed = hashlib.sha256(data["userId"].encode()).hexdigest()
        assert data["context"]["stellwerk"]["user_data"]["external_id"] == [hashed]
        pseudonyms.append(data["userId"])
    assert pseudonyms[0] != pseudonyms[1]
    # The same value gets the same pseudonym within a tenant, by a key every process derives.
    opened = app.services.capabilities[CAPABILITY.name]
    assert isinstance(opened, TrackingOpened)
    binding = await opened.sources.resolve(keys[0])
    assert binding is not None
    tenant_id = binding.tenant.id
    master = derive_key(
        load_or_create_key(app.settings.data_dir, os.environ, create=False), "tracking-pseudonyms"
    )
    tenant_key = hmac.digest(master, tenant_id.encode(), hashlib.sha256)
    assert pseudonyms[0] == hmac.digest(tenant_key, b"u1", hashlib.sha256).hex()


async def test_a_client_cannot_claim_a_consent_it_was_not_given(app: RunningApp) -> None:
    key = await make_source(app.client, app.admin)
    forged_consent = {"purposes": {"advertising": True}, "origin": "tracker"}
    message = track(
        "forged",
        userId="u1",
        context={
            "stellwerk": {"consent": forged_consent},
            "stellwerk.consent.purposes.advertising": True,
        },
        **{"context.stellwerk.consent.purposes.advertising": True},
    )
    assert (await app.client.post("/v1/track", headers=basic(key), json=message)).is_success
    data = (await stored(app))["forged"]
    assert not any(k.startswith("context.") for k in data)
    assert list(data["context"]) == ["stellwerk"]
    assert data["context"]["stellwerk"]["consent"]["purposes"] == {}


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"consent_purposes": ["Analytics"]}, "$.consent_purposes[0]"),
        ({"consent_purposes": ["a.b"]}, "$.consent_purposes[0]"),
        ({"consent_purposes": "analytics"}, "$.consent_purposes"),
        ({"internal_hosts": ["pay.example", "https://x/"]}, "$.internal_hosts[1]"),
        ({"tcf_purposes": {"measure": [0]}}, "$.tcf_purposes.measure"),
        ({"tcf_purposes": {"measure": []}}, "$.tcf_purposes.measure"),
        ({"tcf_purposes": {"Measure": [1]}}, "$.tcf_purposes.Measure"),
    ],
)
async def test_bad_consent_settings_are_refused_naming_the_field(
    app: RunningApp, settings: dict[str, Any], field: str
) -> None:
    body = {"kind": "segment", **settings}
    answer = await app.client.put("/v1/sources/shop", headers=app.admin, json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == field


async def test_consent_settings_are_stored_normalised(running_app: RunningApp) -> None:
    """On SQLite and PostgreSQL: the API shows them, the collector's binding holds them."""
    app = running_app
    body = {
        "kind": "segment",
        "consent_purposes": ["marketing", "analytics", "analytics"],
        "internal_hosts": ["Pay.Example."],
        "tcf_purposes": {"measure": [7, 1, 7]},
    }
    answer = await app.client.put("/v1/sources/shop", headers=app.admin, json=body)
    assert answer.status_code == 201, answer.text
    shown = (await app.client.get("/v1/sources/shop", headers=app.admin)).json()
    assert shown["consent_purposes"] == ["analytics", "marketing"]
    assert shown["internal_hosts"] == ["pay.example"]
    assert shown["tcf_purposes"] == {"measure": [1, 7]}
    opened = app.services.capabilities[CAPABILITY.name]
    assert isinstance(opened, TrackingOpened)
    binding = await opened.sources.resolve(answer.json()["write_key"])
    assert binding is not None
    assert binding.consent_purposes == ("analytics", "marketing")
    assert binding.internal_hosts == ("pay.example",)
    assert binding.tcf_purposes == (("measure", (1, 7)),)
    # A source without them (as every source made before tr_wire_0001) has none.
    answer = await app.client.put("/v1/sources/bare", headers=app.admin, json={"kind": "segment"})
    bare = await opened.sources.resolve(answer.json()["write_key"])
    assert bare is not None
    assert (bare.consent_purposes, bare.internal_hosts, bare.tcf_purposes) == ((), (), ())


def test_a_geo_database_without_the_geoip_extra_stops_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_mmdb(tmp_path / "city.mmdb", {})
    monkeypatch.setitem(sys.modules, "maxminddb", None)  # as if the extra were not installed
    with pytest.raises(ConfigError, match=r"--geoip-db .*pip install 'stellwerk\[geoip\]'"):
        load_settings({"geoip_db": str(path)})
    monkeypatch.undo()
    with pytest.raises(ConfigError, match="is not a file"):
        load_settings({"geoip_db": str(tmp_path / "missing.mmdb")})
    assert load_settings({"geoip_db": str(path)}).geoip_db == path


async def test_a_source_made_before_the_consent_settings_keeps_working(tmp_path: Path) -> None:
    """tr_wire_0001 on a database at tr0001 with a source in it: its new settings are empty."""
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'control.db'}")
    try:
        await migrate.upgrade(engine, "tr0001", location=MIGRATIONS, version_table=VERSION_TABLE)
        async with engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO tr_sources (tenant_id, name, tenant_name, bus, kind, key_id, "
                    "key_digest, allowed_origins, without_consent, full_ip, pseudonymise, "
                    "created_at, updated_at) VALUES ('t1', 'old', 'default', 'default', "
                    "'segment', 'k1', 'd1', '[]', 'drop', 0, '[]', 1, 1)"
                )
            )
        await Database(engine).migrate(MIGRATIONS, version_table=VERSION_TABLE)
        store = SourceStore(engine)
        binding = await store.binding("k1")
        assert binding is not None
        assert (binding.consent_purposes, binding.internal_hosts, binding.tcf_purposes) == (
            (),
            (),
            (),
        )
        source = await store.get(TenantId("t1"), "old")
        assert source is not None
        assert (source.consent_purposes, source.internal_hosts, source.tcf_purposes) == ([], [], {})
    finally:
        await engine.dispose()


_leaf = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)
)
_any = st.recursive(
    _leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
# Members that refine reads, with what an SDK sends or anything at all.
_CONTEXT = st.fixed_dictionaries(
    {},
    optional={
        "ip": st.sampled_from(["81.2.69.160", "2a02:8100::1", "nonsense", ""]) | _any,
        "userAgent": st.sampled_from([CHROME, "Googlebot/2.1", ""]) | _any,
        "page": st.fixed_dictionaries(
            {}, optional={"url": st.text(max_size=40) | _any, "referrer": st.text(max_size=40)}
        )
        | _any,
        "consent": st.fixed_dictionaries(
            {},
            optional={
                "purposes": st.lists(st.sampled_from(["analytics", "a.b", "ADS", ""]) | _any),
                "tcString": st.text(max_size=30) | _any,
                "categoryPreferences": st.dictionaries(st.text(max_size=8), _any, max_size=3),
            },
        )
        | _any,
        "traits": st.fixed_dictionaries({}, optional={"email": st.text(max_size=12) | _any}) | _any,
        "stellwerk": _any,
        "stellwerk.consent.purposes.advertising": _any,
    },
)
_MESSAGE = st.fixed_dictionaries(
    {"type": st.just("track"), "event": st.just("E")},
    optional={
        "userId": _any,
        "anonymousId": _any,
        "traits": _any,
        "timestamp": st.sampled_from(["2026-12-04T10:00:00Z", "0001-01-01T00:00:00", "x"]) | _any,
        "context": _CONTEXT | _any,
        "context.stellwerk.consent.purposes.advertising": _any,
        "ip": _any,
        "ua": _any,
    },
)


@functools.cache
def enricher() -> Enricher:
    """One for the module: its user agent parser takes ~0.15 s to build."""
    return Enricher()


@settings(max_examples=150, deadline=None)
@given(
    message=_MESSAGE,
    kind=st.sampled_from(["segment", "snowplow"]),
    without=st.sampled_from(["drop", "anonymous"]),
    required=st.sampled_from([(), ("analytics",)]),
    full_ip=st.booleans(),
)
def test_refine_takes_any_message_and_only_the_collector_states_consent(
    message: dict[str, Any],
    kind: Literal["segment", "snowplow"],
    without: Literal["drop", "anonymous"],
    required: tuple[str, ...],
    full_ip: bool,
) -> None:
    refiner = Refiner(enricher(), b"k" * 32)
    binding = Binding(
        tenant=TenantRef(TenantId("t1"), TenantName("default")),
        name="shop",
        kind=kind,
        bus="default",
        key_digest="d",
        allowed_origins=frozenset(),
        without_consent=without,
        full_ip=full_ip,
        pseudonymise=("userId", "context.traits.email"),
        consent_purposes=required,
    )
    arrival = Arrival(received_at="2026-12-04T10:00:00Z", ip="192.0.2.7", user_agent=CHROME)
    original = msgspec.json.encode(message)
    refined = refiner(dict(message), arrival, binding)
    # Nested values the message shares (a batch's context) are never changed in place.
    assert msgspec.json.encode(message) == original
    if refined is None:
        assert without == "drop"
        assert required
        return
    msgspec.json.encode(refined)  # stored as JSON
    assert not any(key.startswith("context.stellwerk") for key in refined)
    context = refined["context"]
    assert not any(key.startswith("stellwerk.") for key in context)
    added = context["stellwerk"]
    purposes = added["consent"]["purposes"]
    assert all(value is True and "." not in name for name, value in purposes.items())
    stated = message.get("context")
    stated = stated.get("consent") if isinstance(stated, dict) else None
    listed = stated.get("purposes") if isinstance(stated, dict) else None
    if not isinstance(listed, list) or "advertising" not in listed:
        assert "advertising" not in purposes
    if added["consent"]["anonymous"]:
        assert "userId" not in refined
        assert "anonymousId" not in refined
    if not (full_ip and not added["consent"]["anonymous"]):
        assert added["ip"] in ("", "81.2.69.0", "2a02:8100::", "192.0.2.0")
        if isinstance(context.get("ip"), str) and added["ip"]:
            assert context["ip"].endswith((".0", "::")) or context["ip"] in ("", "nonsense")


def test_a_snowplow_event_is_read_from_its_own_fields() -> None:
    """Snowplow's tracker sends `ip`, `ua`, `url`, `refr`, `uid` and millisecond `dtm`/`ttm`."""
    refiner = Refiner(enricher(), b"k" * 32)
    binding = Binding(
        tenant=TenantRef(TenantId("t1"), TenantName("default")),
        name="app",
        kind="snowplow",
        bus="default",
        key_digest="d",
        allowed_origins=frozenset(),
        without_consent="drop",
        full_ip=False,
        pseudonymise=(),
    )
    message = {
        "e": "pv",
        "eid": "e-1",
        "uid": "u-9",
        "ip": "81.2.69.160",
        "ua": CHROME,
        "url": "https://shop.example/?utm_campaign=winter",
        "refr": "https://t.co/abc",
        "dtm": "1796378400123",
        "contexts": {"schema": "iglu:x/y/jsonschema/1-0-0", "data": []},
    }
    arrival = Arrival(received_at="2026-12-05T00:00:00Z", ip="192.0.2.7", user_agent="curl/8")
    refined = refiner(dict(message), arrival, binding)
    assert refined is not None
    assert refined["ip"] == "81.2.69.0"
    assert refined["contexts"] == message["contexts"]
    added = refined["context"]["stellwerk"]
    assert added["user_agent"]["browser"] == "Chrome"
    assert added["campaign"]["name"] == "winter"
    assert added["referrer"] == "social"
    assert added["event_time"] == 1_796_378_400
    assert added["user_data"]["external_id"] == [hashlib.sha256(b"u-9").hexdigest()]

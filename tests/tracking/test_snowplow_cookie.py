"""The Snowplow collector's network user id: a cookie `sp` the collector sets (Snowplow's
collector's name, lifetime and attributes), whose value is each consented event's `nuid`; kept
across requests, renewed, never taken from a tracker, and neither set nor written for a tracker
in anonymous mode or an event without consent."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import RunningApp, app_running
from tests.tracking.support import bus_events, make_source

from stellwerk.config import load_settings

TP2 = "/com.snowplowanalytics.snowplow/tp2"
PAYLOAD_DATA = "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4"
YEAR = 365 * 24 * 3600
COOKIE = re.compile(r"^sp=([0-9a-f-]{36}); ")


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[RunningApp]:
    async with app_running(load_settings({"data_dir": str(tmp_path / "data")})) as running:
        yield running


def body(key: str, *events: dict[str, Any]) -> dict[str, Any]:
    return {"schema": PAYLOAD_DATA, "data": [{"e": "pv", "aid": key, **e} for e in events]}


def network_id(set_cookie: str) -> str:
    found = COOKIE.match(set_cookie)
    assert found, set_cookie
    return found[1]


async def test_the_collector_sets_the_network_user_id_and_writes_it_into_each_event(
    app: RunningApp,
) -> None:
    key = await make_source(app.client, app.admin, "web", kind="snowplow")
    # A tracker's own nuid is not the collector's: it is replaced.
    first = await app.client.post(TP2, json=body(key, {"eid": "e-1", "nuid": "forged"}))
    assert first.status_code == 200, first.text
    cookie = first.headers["set-cookie"]
    nuid = network_id(cookie)
    assert uuid.UUID(nuid).version == 4
    # Snowplow's collector's defaults; over plain HTTP, Lax without Secure (see the docs).
    assert set(cookie.split("; ")[1:]) == {
        f"Max-Age={YEAR}",
        "Path=/",
        "SameSite=Lax",
        "HttpOnly",
    }

    # The browser sends it back (as it does): the same id, the cookie renewed.
    app.client.cookies.set("sp", nuid)
    again = await app.client.get("/i", params={"e": "pv", "eid": "e-2", "aid": key})
    assert again.status_code == 200, again.text
    assert network_id(again.headers["set-cookie"]) == nuid

    # A cookie this collector could not have set is replaced, never trusted as an id.
    app.client.cookies.set("sp", "not-a-uuid")
    forged = await app.client.post(TP2, json=body(key, {"eid": "e-3"}))
    replaced = network_id(forged.headers["set-cookie"])
    assert replaced != nuid
    app.client.cookies.clear()

    stored = await bus_events(app)
    assert [e["data"]["nuid"] for e in stored] == [nuid, nuid, replaced]
    assert [e["subject"] for e in stored] == [nuid, nuid, replaced]  # no uid, duid, tnuid


async def test_over_https_the_cookie_is_snowplows_same_site_none_and_secure(
    app: RunningApp,
) -> None:
    key = await make_source(app.client, app.admin, "web", kind="snowplow")
    answer = await app.client.post(f"https://collector.example{TP2}", json=body(key, {}))
    assert answer.status_code == 200, answer.text
    attributes = set(answer.headers["set-cookie"].split("; ")[1:])
    assert attributes == {f"Max-Age={YEAR}", "Path=/", "SameSite=None", "Secure", "HttpOnly"}


async def test_no_cookie_and_no_network_id_when_anonymous_or_without_consent(
    app: RunningApp,
) -> None:
    key = await make_source(app.client, app.admin, "web", kind="snowplow")
    anonymous = await app.client.post(
        TP2, headers={"SP-Anonymous": "*"}, json=body(key, {"eid": "a-1", "nuid": "forged"})
    )
    assert anonymous.status_code == 200, anonymous.text
    assert "set-cookie" not in anonymous.headers

    strict = await make_source(
        app.client,
        app.admin,
        "strict",
        kind="snowplow",
        consent_purposes=["analytics"],
        without_consent="anonymous",
    )
    unconsented = await app.client.post(TP2, json=body(strict, {"eid": "a-2", "duid": "d"}))
    assert unconsented.status_code == 200, unconsented.text
    assert "set-cookie" not in unconsented.headers
    # A request refused as a whole sets none either.
    refused = await app.client.post(TP2, json=body(key, {"e": "nope", "eid": "a-3"}))
    assert refused.status_code == 400
    assert "set-cookie" not in refused.headers

    stored = await bus_events(app)
    assert [e["id"] for e in stored] == ["a-1", "a-2"]
    assert all("nuid" not in e["data"] for e in stored)

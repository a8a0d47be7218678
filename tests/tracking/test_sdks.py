"""The real SDKs, unchanged, pointed at Stellwerk: Segment's `segment-analytics-python` and
RudderStack's `rudder-sdk-python` send over HTTP on loopback to the app behind uvicorn, and
every call they make arrives as a CloudEvent. Both SDKs are synchronous (a consumer thread and
`requests`), so they run in a worker thread while the event loop serves them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from rudderstack.analytics.client import Client as RudderClient
from segment.analytics.client import Client as SegmentClient
from tests.conftest import app_served, free_port

from stellwerk.compose import Services
from stellwerk.config import load_settings
from stellwerk.refs import BusRef, TenantName
from stellwerk.tracking import CAPABILITY, Arrival, Binding, TrackingOpened


@dataclass
class Served:
    url: str
    write_key: str
    services: Services
    admin: dict[str, str]  # the bootstrap admin key's header, to make more sources

    async def events(self) -> list[dict[str, Any]]:
        stored = await self.services.stores.event_log.read(BusRef(TenantName("default"), "default"))
        return [msgspec.json.decode(e.body) for e in stored]


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    """The whole app behind uvicorn on a free loopback port, with a segment source."""
    settings = load_settings({"data_dir": str(tmp_path / "data"), "port": free_port()})
    # Trusted for X-Forwarded-For as `stellwerk serve` trusts by default (uvicorn's default,
    # unless FORWARDED_ALLOW_IPS says otherwise), whatever this machine's environment says.
    async with app_served(settings, forwarded_allow_ips="127.0.0.1") as (url, app):
        made = await app.client.put("/v1/sources/shop", headers=app.admin, json={"kind": "segment"})
        assert made.status_code == 201, made.text
        yield Served(url, made.json()["write_key"], app.services, app.admin)


def every_call(client: SegmentClient | RudderClient) -> None:
    """One call of each kind, as a shop's backend makes them, then a flush."""
    client.identify("u-1", {"email": "ada@example.com", "plan": "pro"})
    client.track("u-1", "Order Completed", {"order_id": "o-1", "total": 42.5})
    client.page("u-1", "Shop", "Cart", {"url": "https://shop.example/cart"})
    client.screen("u-1", "App", "Checkout")
    client.group("u-1", "g-1", {"name": "Acme"})
    client.alias("anon-7", "u-1")
    client.flush()


def one_track(client: SegmentClient | RudderClient) -> None:
    client.track("u", "E")
    client.flush()


# The consumer thread sends what it holds every `upload_interval` (0.5 s by default).
QUICK = 0.05
TYPES = ["identify", "track", "page", "screen", "group", "alias"]


async def test_segments_python_sdk_sends_unchanged(served: Served) -> None:
    errors: list[Exception] = []
    client = SegmentClient(
        served.write_key,
        host=served.url,
        gzip=True,
        on_error=lambda error, _batch: errors.append(error),
        max_retries=1,
        upload_interval=QUICK,
    )
    try:
        await asyncio.to_thread(every_call, client)
    finally:
        await asyncio.to_thread(client.shutdown)
    assert errors == []
    events = await served.events()
    assert [e["type"] for e in events] == [f"segment.{t}" for t in TYPES]
    assert all(e["id"] == e["data"]["messageId"] for e in events)
    assert {e["subject"] for e in events} == {"u-1"}
    assert events[0]["data"]["context"]["library"]["name"] == "analytics-python"
    assert events[1]["data"]["properties"] == {"order_id": "o-1", "total": 42.5}
    assert events[5]["data"]["previousId"] == "anon-7"


async def test_rudderstacks_python_sdk_sends_unchanged(served: Served) -> None:
    errors: list[Exception] = []
    client = RudderClient(
        served.write_key,
        host=served.url,
        on_error=lambda error, _batch: errors.append(error),
        max_retries=1,
        upload_interval=QUICK,
    )
    try:
        await asyncio.to_thread(every_call, client)
    finally:
        await asyncio.to_thread(client.shutdown)
    assert errors == []
    events = await served.events()
    assert [e["type"] for e in events] == [f"segment.{t}" for t in TYPES]
    assert all(e["id"] == e["data"]["messageId"] for e in events)
    assert events[2]["data"]["name"] == "Cart"


async def test_the_sdks_are_told_of_a_wrong_write_key(served: Served) -> None:
    for make in (SegmentClient, RudderClient):
        errors: list[Any] = []
        client = make(
            "wk_0123456789abcdef_not-the-right-secret-at-all",
            host=served.url,
            on_error=lambda error, _batch, errors=errors: errors.append(error),
            max_retries=1,
            upload_interval=QUICK,
        )
        try:
            await asyncio.to_thread(one_track, client)
        finally:
            await asyncio.to_thread(client.shutdown)
        # The SDK read Segment's error shape: the status, code and message, and gave up.
        assert [(e.status, e.code) for e in errors] == [(401, "Unauthorized")], make
        assert "write key" in errors[0].message
    assert await served.events() == []


async def test_behind_a_trusted_proxy_the_sender_is_the_forwarded_address(served: Served) -> None:
    """uvicorn takes `X-Forwarded-For` from the addresses in `FORWARDED_ALLOW_IPS` (loopback
    by default, and here): enrichment sees the shop visitor's address, not the balancer's."""
    opened = served.services.capabilities[CAPABILITY.name]
    assert isinstance(opened, TrackingOpened)
    seen: list[str | None] = []

    def refine(message: dict[str, Any], arrival: Arrival, _binding: Binding) -> dict[str, Any]:
        seen.append(arrival.ip)
        return message

    opened.collector.refine = refine
    async with httpx.AsyncClient(base_url=served.url) as client:
        for forwarded in ({"X-Forwarded-For": "203.0.113.9"}, {}):
            answer = await client.post(
                "/v1/track",
                json={"writeKey": served.write_key, "userId": "u", "event": "E"},
                headers=forwarded,
            )
            assert answer.status_code == 200
    assert seen == ["203.0.113.9", "127.0.0.1"]


def fixed_calls(client: SegmentClient | RudderClient) -> None:
    """A shop's calls with their ids and times given, so that two runs send the same."""
    when = datetime(2026, 12, 4, 10, 0, 0, 123000, tzinfo=UTC)
    context = {
        "ip": "81.2.69.160",
        "userAgent": CHROME,
        "page": {"url": "https://shop.example/p?utm_source=news", "referrer": ""},
        "consent": {"purposes": ["analytics"]},
        "traits": {"email": "Ada@Example.com"},
    }
    client.identify(
        "u-1", {"email": "ada@example.com", "name": "Ädá"}, timestamp=when, message_id="m-1"
    )
    client.track(
        "u-1",
        "Order Completed",
        {"order_id": "o-1", "total": 42.5, "items": [{"sku": "s", "qty": 2}]},
        context=context,
        timestamp=when,
        message_id="m-2",
    )
    client.page(
        "u-1",
        "Shop",
        "Cart",
        {"url": "https://shop.example/cart"},
        timestamp=when,
        message_id="m-3",
    )
    client.track(
        anonymous_id="a-9", event="Viewed", context=context, timestamp=when, message_id="m-4"
    )
    client.alias("anon-7", "u-1", timestamp=when, message_id="m-5")
    client.flush()


CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)


@pytest.mark.parametrize("sdk", ["segment", "rudderstack"])
async def test_the_sdks_calls_are_stored_as_the_general_way_stores_them(
    served: Served, sdk: str
) -> None:
    """The same calls of the real SDK (Segment's gzipped), once read by `segment_reader` and
    once decoded whole (the collector's `refine` replaced by another callable): the stored
    events are the same but for the times of sending and arrival."""
    opened = served.services.capabilities[CAPABILITY.name]
    assert isinstance(opened, TrackingOpened)
    async with httpx.AsyncClient(base_url=served.url) as http:
        settings = {"kind": "segment", "pseudonymise": ["userId", "context.traits.email"]}
        keys = {}
        for name in ("read", "whole"):
            made = await http.put(f"/v1/sources/{name}", headers=served.admin, json=settings)
            assert made.status_code == 201, made.text
            keys[name] = made.json()["write_key"]
    refine = opened.collector.refine
    for name in ("read", "whole"):
        if name == "whole":
            opened.collector.refine = lambda m, a, b: refine(m, a, b)
        assert (opened.collector.quick() is None) == (name == "whole")
        errors: list[Exception] = []
        make = SegmentClient if sdk == "segment" else RudderClient
        options: dict[str, Any] = {"gzip": True} if sdk == "segment" else {}
        client = make(
            keys[name],
            host=served.url,
            on_error=lambda error, _batch, errors=errors: errors.append(error),
            max_retries=1,
            upload_interval=QUICK,
            **options,
        )
        try:
            await asyncio.to_thread(fixed_calls, client)
        finally:
            await asyncio.to_thread(client.shutdown)
        assert errors == []
    events = await served.events()
    read = [comparable(e) for e in events if e["source"] == "/sources/read"]
    whole = [comparable(e) for e in events if e["source"] == "/sources/whole"]
    assert len(read) == 5
    assert read == whole
    assert read[1]["data"]["context"]["stellwerk"]["consent"]["purposes"] == {"analytics": True}
    assert read[1]["data"]["userId"] != "u-1"  # pseudonymised


def comparable(event: dict[str, Any]) -> dict[str, Any]:
    """An event but its source and the times of sending, arrival and recording."""
    event = {**event, "data": {**event["data"], "context": dict(event["data"]["context"])}}
    del event["source"], event["recordedtime"]
    event["data"].pop("sentAt", None)
    event["data"].pop("originalTimestamp", None)
    stellwerk = dict(event["data"]["context"]["stellwerk"])
    del stellwerk["received_at"]
    event["data"]["context"]["stellwerk"] = stellwerk
    return event

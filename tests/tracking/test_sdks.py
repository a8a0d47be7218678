"""The real SDKs, unchanged, pointed at Stellwerk: Segment's `segment-analytics-python` and
RudderStack's `rudder-sdk-python` send over HTTP on loopback to the app behind uvicorn, and
every call they make arrives as a CloudEvent. Both SDKs are synchronous (a consumer thread and
`requests`), so they run in a worker thread while the event loop serves them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import uvicorn
from rudderstack.analytics.client import Client as RudderClient
from segment.analytics.client import Client as SegmentClient
from tests.conftest import Bootstrap, free_port

from stellwerk.app import build_app
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
    port = free_port()
    settings = load_settings({"data_dir": str(tmp_path / "data"), "port": port})
    app = build_app(settings)
    # Trusted for X-Forwarded-For as `stellwerk serve` trusts by default (uvicorn's default,
    # unless FORWARDED_ALLOW_IPS says otherwise), whatever this machine's environment says.
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        lifespan="on",
        forwarded_allow_ips="127.0.0.1",
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        services = await asyncio.wait_for(app.state.lifecycle.wait_started(), 30)
        bootstrap = msgspec.json.decode(
            (settings.data_dir / "bootstrap.json").read_bytes(), type=Bootstrap
        )
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=url) as client:
            admin = {"Authorization": f"Bearer {bootstrap.admin_key}"}
            made = await client.put("/v1/sources/shop", headers=admin, json={"kind": "segment"})
            assert made.status_code == 201, made.text
        yield Served(url, made.json()["write_key"], services, admin)
    finally:
        server.should_exit = True
        await serving


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

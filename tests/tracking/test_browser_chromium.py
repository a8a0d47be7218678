"""The browser tracker in a real browser: Debian's Chromium, driven by Playwright, loads a shop
page served on one loopback port that includes `/t.js` from the collector on another. Nothing
is sent before consent, the events arrive on the bus, the collector sets the visitor cookie
(HttpOnly, SameSite=Lax, 400 days) and its id stays the visitor's on the next page, and events
tracked offline wait in localStorage and are sent once the browser is back online."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route
from tests.conftest import IN_CI, Bootstrap, RunningApp, free_port
from tests.polling import eventually
from tests.tracking.support import bus_events, make_source

from stellwerk.app import build_app
from stellwerk.config import load_settings
from stellwerk.tracking import browser as tracker

pytestmark = pytest.mark.slow  # starts Chromium

CHROMIUM = "/usr/bin/chromium"

if not Path(CHROMIUM).exists() and not IN_CI:
    pytest.skip(f"{CHROMIUM} is not installed (Debian's chromium)", allow_module_level=True)

from playwright.async_api import Browser, Page, async_playwright  # noqa: E402
from playwright.async_api import Request as Request_  # noqa: E402


@dataclass
class Shop:
    url: str  # the shop's page
    collector: str
    app: RunningApp


async def serve(app: Any, port: int) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    await eventually(lambda: server.started, what="uvicorn started", within=30)
    return server, task


@pytest.fixture
async def shop(tmp_path: Path) -> AsyncIterator[Shop]:
    """The collector (the whole app) and a shop's page, each behind uvicorn on loopback."""
    port, shop_port = free_port(), free_port()
    settings = load_settings({"data_dir": str(tmp_path / "data"), "port": port})
    app = build_app(settings)
    collector = f"http://127.0.0.1:{port}"
    shop_url = f"http://127.0.0.1:{shop_port}"
    key: list[str] = []

    async def page(_request: Request) -> HTMLResponse:
        return HTMLResponse(
            "<!doctype html><title>Shop</title><h1>Shop</h1>"
            '<script>window.stellwerk = [["page", "Home"], ["track", "Product Viewed", '
            '{"sku": "A1"}]];</script>'
            f'<script src="{collector}/t.js" data-write-key="{key[0]}"></script>'
        )

    server, serving = await serve(app, port)
    shop_server, shop_serving = await serve(Starlette(routes=[Route("/", page)]), shop_port)
    try:
        services = await asyncio.wait_for(app.state.lifecycle.wait_started(), 30)
        bootstrap = msgspec.json.decode(
            (settings.data_dir / "bootstrap.json").read_bytes(), type=Bootstrap
        )
        async with httpx.AsyncClient(base_url=collector) as client:
            running = RunningApp(client, services, settings, bootstrap)
            key.append(
                await make_source(
                    client,
                    running.admin,
                    kind="browser",
                    allowed_origins=[shop_url],
                    consent_purposes=["analytics"],
                )
            )
            yield Shop(shop_url + "/", collector, running)
    finally:
        shop_server.should_exit = True
        server.should_exit = True
        await shop_serving
        await serving


@pytest.fixture
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=shutil.which("chromium") or CHROMIUM,
            headless=True,
            args=["--no-sandbox"],  # tests may run as root (CI's container)
        )
        try:
            yield launched
        finally:
            await launched.close()


async def events_of(shop: Shop, count: int) -> list[dict[str, Any]]:
    async def probe() -> list[dict[str, Any]]:
        return await bus_events(shop.app)

    found: list[dict[str, Any]] = await eventually(
        probe, what=f"{count} events on the bus", accept=lambda e: len(e) >= count
    )
    return found


async def test_a_shop_page_tracks_after_consent_with_a_server_set_cookie(
    shop: Shop, chromium: Browser
) -> None:
    context = await chromium.new_context()
    page: Page = await context.new_page()
    posted: list[Any] = []  # the bodies the page POSTed to /v1/b

    def record(request: Request_) -> None:
        if request.url.endswith("/v1/b"):
            posted.append(request.post_data_json)

    page.on("request", record)
    async with page.expect_response(lambda r: "/v1/b/settings" in r.url) as asked:
        await page.goto(shop.url)
    settings = await (await asked.value).json()
    assert settings == {"consentRequired": True, "purposes": ["analytics"]}
    # The source drops events without consent: the script holds them, stores nothing.
    assert await page.evaluate("localStorage.getItem('stellwerk:queue')") is None

    async with page.expect_response(lambda r: r.url.endswith("/v1/b")) as sent:
        await page.evaluate("stellwerk.consent(['analytics'])")
    answer = await sent.value
    assert answer.status == 200
    set_cookie = await answer.header_value("set-cookie")
    assert set_cookie is not None
    assert set_cookie.startswith(f"{tracker.COOKIE}=")

    events = await events_of(shop, 2)
    assert [e["type"] for e in events] == ["segment.page", "segment.track"]
    assert {e["source"] for e in events} == {"/sources/shop"}
    assert events[1]["data"]["event"] == "Product Viewed"
    assert events[1]["data"]["context"]["consent"] == {"purposes": ["analytics"]}
    assert events[1]["data"]["context"]["page"]["url"] == shop.url
    # Every request the page made carried consent: none went out before it.
    assert posted
    assert all(m["context"]["consent"] for body in posted for m in body["batch"])

    (cookie,) = await context.cookies(shop.collector)
    visitor = cookie["value"]
    assert cookie["name"] == tracker.COOKIE
    assert tracker.visitor_of(visitor) == visitor
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Lax"
    assert cookie["secure"] is False  # plain HTTP on loopback; Secure over HTTPS
    assert abs(cookie["expires"] - (time.time() + tracker.COOKIE_MAX_AGE)) < 60
    assert {e["data"]["anonymousId"] for e in events} == {visitor}

    # The next page: the same visitor. Offline, its events wait in localStorage.
    await page.goto(shop.url)
    await events_of(shop, 4)
    await context.set_offline(True)
    await page.evaluate("stellwerk.identify('u1', {plan: 'pro'})")
    await page.evaluate("stellwerk.track('Order Completed', {total: 42})")

    async def queued() -> Any:
        return await page.evaluate("JSON.parse(localStorage.getItem('stellwerk:queue'))")

    waiting = await eventually(queued, what="two messages queued", accept=lambda q: len(q) == 2)
    assert [m["type"] for m in waiting] == ["identify", "track"]
    await context.set_offline(False)

    events = await events_of(shop, 6)
    assert [e["type"] for e in events[4:]] == ["segment.identify", "segment.track"]
    assert events[5]["data"]["userId"] == "u1"
    assert {e["data"]["anonymousId"] for e in events} == {visitor}
    await eventually(queued, what="the queue emptied", accept=lambda q: q == [])
    await context.close()

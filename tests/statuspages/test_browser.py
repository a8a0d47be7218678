"""Status pages in a real browser: Debian's Chromium, driven by Playwright, against the app
served by uvicorn on loopback. The page reads with JavaScript off, follows the reader's colour
scheme, and the skeleton fills itself from the JSON with JavaScript on.

STELLWERK_UPDATE_SCREENSHOT=1 writes docs/images/status-page.png from the light page.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from tests.conftest import IN_CI, app_served, free_port

from stellwerk.clock import to_us
from stellwerk.compose import Services
from stellwerk.config import load_settings
from stellwerk.statuspages import StatusPagesOpened
from stellwerk.statuspages.tables import status_history

pytestmark = pytest.mark.slow  # starts Chromium

CHROMIUM = "/usr/bin/chromium"
SCREENSHOT = Path(__file__).parents[2] / "docs" / "images" / "status-page.png"

if not Path(CHROMIUM).exists() and not IN_CI:
    pytest.skip(f"{CHROMIUM} is not installed (Debian's chromium)", allow_module_level=True)

from playwright.async_api import Browser, async_playwright  # noqa: E402


@dataclass
class Served:
    url: str
    client: httpx.AsyncClient
    admin: dict[str, str]
    opened: StatusPagesOpened


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    """The whole app behind uvicorn on a free loopback port."""
    settings = load_settings({"data_dir": str(tmp_path / "data"), "port": free_port()})
    async with app_served(settings) as (url, app):
        opened = app.services.capabilities["status-pages"]
        assert isinstance(opened, StatusPagesOpened)
        opened.cache.render_budget = 60.0
        await make_page(app.client, app.admin)
        await backdate_history(app.services)
        yield Served(url, app.client, app.admin, opened)


async def make_page(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    page = {
        "title": "Acme",
        "description": "How Acme's services are doing",
        "time_zone": "Europe/Berlin",
        "branding": {"accent_color": "#6639ba"},
    }
    assert (await client.put("/v1/status-pages/acme", headers=admin, json=page)).is_success
    components = {
        "api": {"name": "API", "group": "Core", "position": 1},
        "web": {"name": "Website", "group": "Core", "position": 2},
        "db": {
            "name": "Database",
            "group": "Core",
            "position": 3,
            "status": "degraded_performance",
        },
        "cdn": {"name": "CDN", "group": "Edge", "position": 1},
        "mail": {"name": "Email delivery", "group": "Edge", "position": 2},
    }
    for component, body in components.items():
        made = await client.put(
            f"/v1/status-pages/acme/components/{component}", headers=admin, json=body
        )
        assert made.is_success, made.text


async def backdate_history(services: Services) -> None:
    """Ninety days behind the components, as if they had been there all along (with a few bad
    hours), so that the bars show what they are for: written into the status history itself."""
    tenant = await services.stores.control.get_tenant("default")
    assert tenant is not None
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    rows = [
        (c, "operational", now - timedelta(days=120)) for c in ("api", "web", "db", "cdn", "mail")
    ]
    for component, status, days_ago, hours in [
        ("api", "partial_outage", 40, 3),
        ("api", "major_outage", 7, 1),
        ("db", "degraded_performance", 12, 5),
        ("cdn", "degraded_performance", 63, 6),
        ("mail", "under_maintenance", 20, 2),
    ]:
        begin = now - timedelta(days=days_ago)
        rows += [
            (component, status, begin),
            (component, "operational", begin + timedelta(hours=hours)),
        ]
    async with services.stores.control.engine.begin() as conn:
        await conn.execute(
            status_history.insert(),
            [
                {
                    "tenant_id": tenant.id,
                    "page": "acme",
                    "component": c,
                    "status": s,
                    "at": to_us(at),
                }
                for c, s, at in rows
            ],
        )


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
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


async def test_the_page_reads_without_javascript(served: Served, browser: Browser) -> None:
    context = await browser.new_context(
        java_script_enabled=False, color_scheme="light", viewport={"width": 1000, "height": 900}
    )
    page = await context.new_page()
    answer = await page.goto(f"{served.url}/status/acme")
    assert answer is not None
    assert answer.status == 200
    assert await page.locator("h1").inner_text() == "Minor Service Outage"
    assert await page.get_attribute("html", "lang") == "en"
    assert await page.locator("main").count() == 1
    names = await page.locator(".cname").all_inner_texts()
    assert names == ["API", "Website", "Database", "CDN", "Email delivery"]
    assert await page.locator("h3").all_inner_texts() == ["Core", "Edge"]
    # Each run of an uptime bar says in words what its colour shows.
    labels = await page.locator(".bar li").first.get_attribute("title")
    assert labels is not None
    assert "no data" in labels or "operational" in labels
    background = await page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(255, 255, 255)"
    shot = await page.screenshot(full_page=True)
    if os.environ.get("STELLWERK_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        SCREENSHOT.write_bytes(shot)
    await context.close()

    phone = await browser.new_context(
        java_script_enabled=False, color_scheme="dark", viewport={"width": 360, "height": 740}
    )
    page = await phone.new_page()
    await page.goto(f"{served.url}/status/acme")
    background = await page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(13, 17, 23)"  # dark, as the reader asks
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 360  # nothing runs off a phone's screen
    await phone.close()


async def test_the_skeleton_fills_itself_from_the_json(served: Served, browser: Browser) -> None:
    summary = await served.client.get("/status/acme/api/v2/summary.json")
    if summary.status_code == 404:
        pytest.skip("summary.json is not served on this branch (statusapi.py)")
    served.opened.cache.render_budget = 0.0  # every first render is past its budget
    context = await browser.new_context(java_script_enabled=True)
    page = await context.new_page()
    answer = await page.goto(f"{served.url}/status/acme")
    assert answer is not None
    assert answer.headers["cache-control"] == "no-store"  # the skeleton, not the page
    await page.wait_for_selector("html[data-filled='true']", timeout=10_000)
    assert await page.locator("h1").inner_text() == "Minor Service Outage"
    names = await page.locator("#component-list .cname").all_inner_texts()
    assert names == ["API", "Website", "Database", "CDN", "Email delivery"]
    await context.close()

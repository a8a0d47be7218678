"""The console in a real browser: Debian's Chromium, driven by Playwright, against the app
served by uvicorn on loopback. One journey: log in, create a rule, send an event, see its
delivery attempts, redrive its dead letter, tail the bus, watch a replay; the browser's
console stays free of errors (a script error, a refused resource, a CSP violation).

STELLWERK_UPDATE_SCREENSHOT=1 writes the main pages to docs/images/console-*.png.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tests.console.conftest import Receiver, Served
from tests.polling import wait_until

from stellwerk.events import format_rfc3339

pytestmark = pytest.mark.slow  # starts Chromium

CHROMIUM = "/usr/bin/chromium"
IMAGES = Path(__file__).parents[2] / "docs" / "images"

if not Path(CHROMIUM).exists() and os.environ.get("CI") != "true":
    pytest.skip(f"{CHROMIUM} is not installed (Debian's chromium)", allow_module_level=True)

from playwright.sync_api import Browser, Page, sync_playwright  # noqa: E402


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=shutil.which("chromium") or CHROMIUM,
            headless=True,
            args=["--no-sandbox"],  # tests may run as root (CI's container)
        )
        try:
            yield launched
        finally:
            launched.close()


class Watched:
    """A page whose browser console errors and uncaught script errors are collected."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))


def shoot(page: Page, name: str) -> None:
    if os.environ.get("STELLWERK_UPDATE_SCREENSHOT") == "1":
        IMAGES.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(IMAGES / f"console-{name}.png"), full_page=True)


def test_a_journey_through_the_console(
    served: Served, receiver: Receiver, browser: Browser
) -> None:
    served.console.rates.every = 0.25  # charts with a few points by the end of the journey
    context = browser.new_context(color_scheme="light", viewport={"width": 1280, "height": 900})
    watched = Watched(context.new_page())
    page = watched.page
    base = served.url + "/console"

    # Log in: a page asked for without a session comes back after the login.
    page.goto(base + "/buses/default")
    assert page.url.startswith(base + "/login")
    page.fill("input[name=key]", served.bootstrap.admin_key)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/buses/default")

    # Create a rule: an HTTP target that refuses (a dead letter) beside a log target.
    receiver.refusing = True
    page.click("text=New rule")
    page.fill("input[name=name]", "orders")
    page.fill("textarea[name=pattern]", '{"type": ["order.created"], "source": ["browser"]}')
    page.fill(
        "textarea[name=targets]",
        f'[{{"id": "hook", "type": "http", "url": "{receiver.url}"}}, '
        '{"id": "audit", "type": "log"}]',
    )
    page.fill(
        "textarea[name=event]",
        '{"type": "order.created", "source": "elsewhere", "id": "x"}',
    )
    page.click("text=Test pattern")
    assert page.locator(".tested.nomatch").is_visible()
    assert "source" in page.locator(".tested table").inner_text()
    shoot(page, "rule-editor")
    page.click("text=Create rule")
    page.wait_for_url(base + "/buses/default/rules/orders")
    assert page.locator("h1").inner_text().startswith("Rule orders")

    # Send an event from the bus's page.
    page.goto(base + "/buses/default")
    page.fill(
        "textarea[name=event]",
        '{"specversion": "1.0", "id": "b-1", "source": "browser", "type": "order.created", '
        '"data": {"note": "<script>alert(1)</script>"}}',
    )
    page.click("button:text('Send')")
    assert page.locator(".ok").inner_text() == "The event was accepted."
    shoot(page, "bus")

    # Its delivery attempts, once both targets have settled it.
    def settled() -> bool:
        found = served.api("GET", "/v1/buses/default/events/b-1")
        if found.status_code != 200:
            return False
        states = {t["target"]: t["state"] for t in found.json()["targets"]}
        return states == {"hook": "dead_lettered", "audit": "delivered"}

    wait_until(settled, what="the event dead-lettered by the hook, delivered to the log")
    page.click("text=b-1")
    assert page.locator("h1").inner_text().startswith("Event b-1")
    assert page.locator("text=dead lettered").first.is_visible()
    assert page.locator(".attempts td.num").first.inner_text() == "1"
    assert "<script>alert(1)</script>" in page.locator("pre.json").inner_text()
    shoot(page, "event")

    # Redrive the dead letter, now that the receiver takes it.
    receiver.refusing = False
    page.click("nav.sub >> text=Dead letters")
    page.check("input[name=id]")
    shoot(page, "dead-letters")
    page.click("text=Redrive selected")
    assert page.locator(".ok").inner_text() == "1 dead letter(s) sent again."
    wait_until(lambda: receiver.taken, what="the redriven event delivered")

    # The live tail shows an event sent while it watches.
    page.goto(base + "/buses/default/tail")
    page.locator("#tail-state", has_text=re.compile(r"^connected")).wait_for()
    answer = served.api(
        "POST",
        "/v1/buses/default/events",
        json=[{"specversion": "1.0", "id": "tailed-1", "source": "browser", "type": "ping"}],
    )
    assert answer.status_code == 202
    page.wait_for_selector("#tail-events .tailed >> text=ping · tailed-1")
    shoot(page, "tail")

    # Archive the bus, and watch a replay of it run to the end.
    page.goto(base + "/buses/default/archives")
    page.fill("input[name=name]", "all")
    page.click("text=Create archive")
    for i in range(3):
        served.api(
            "POST",
            "/v1/buses/default/events",
            json=[{"specversion": "1.0", "id": f"a-{i}", "source": "shop", "type": "order"}],
        )

    def archived() -> bool:
        return int(served.api("GET", "/v1/buses/default/archives/all").json()["events"]) >= 3

    wait_until(archived, what="three events archived")
    page.goto(base + "/replays")
    now = datetime.now(UTC)
    page.fill("input[name=name]", "again")
    page.fill("input[name=start]", format_rfc3339(now - timedelta(hours=1)))
    page.fill("input[name=end]", format_rfc3339(now))
    page.click("text=Start replay")
    page.wait_for_url(base + "/replays")
    row = page.locator("#replay-again")
    row.locator(".replay-state >> text=/^completed/").wait_for()
    value = row.locator("progress").evaluate("p => [p.value, p.max]")
    assert value[0] == value[1] >= 3
    assert row.locator("text=cancel").count() == 0  # gone once the replay finished
    shoot(page, "replays")

    page.goto(base + "/buses")
    shoot(page, "buses")
    assert watched.errors == []
    context.close()


def test_a_read_key_sees_pages_without_forms_that_change_things(
    served: Served, browser: Browser
) -> None:
    context = browser.new_context()
    watched = Watched(context.new_page())
    page = watched.page
    page.goto(served.url + "/console/login")
    page.fill("input[name=key]", served.key("read"))
    page.click("button[type=submit]")
    page.wait_for_url(served.url + "/console/buses")
    assert page.locator(".scope").inner_text() == "read · read-only"
    page.goto(served.url + "/console/buses/default")
    assert page.locator("textarea[name=event]").count() == 0
    assert page.locator("text=New rule").count() == 0
    page.click("text=Log out")
    page.wait_for_url(served.url + "/console/login?then=/console/buses")
    assert watched.errors == []
    context.close()

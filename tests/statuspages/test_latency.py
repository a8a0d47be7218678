"""The latency chart: check results summed per quarter hour as they are stored, folded into the
page's local days (pure, with a zone whose hours start at :30), drawn as an inline SVG on the
page and carried in `components.json`; over the whole app on SQLite and PostgreSQL, and once
with the real runner probing a server on loopback."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from tests.conftest import RunningApp, app_running
from tests.delivery.targets.support import Receiver, start_receiver
from tests.polling import eventually
from tests.statuspages.support import internal_events

from stellwerk.config import load_settings
from stellwerk.statuspages import StatusPagesOpened, events
from stellwerk.statuspages.check_store import CheckResult
from stellwerk.statuspages.events import CHANGED, INTERNAL_BUS
from stellwerk.statuspages.latency import DayLatency, HourSum, Latency, daily_latency, hour_shift
from stellwerk.statuspages.render import duration, latency_chart


def test_hours_fold_into_the_local_days_of_the_page() -> None:
    kolkata = "Asia/Kolkata"  # +05:30 all year: its hours start at :30 UTC
    now = datetime(2026, 5, 4, 12, tzinfo=UTC)
    assert hour_shift(kolkata, now) == timedelta(minutes=30)
    assert hour_shift("Europe/Berlin", now) == timedelta(0)
    hours = [
        # 3 May 17:30 UTC is 23:00 local: still 3 May.
        HourSum(datetime(2026, 5, 3, 17, 30, tzinfo=UTC), 2, 300.0, 200.0),
        # 18:30 UTC is midnight local: 4 May.
        HourSum(datetime(2026, 5, 3, 18, 30, tzinfo=UTC), 1, 50.0, 50.0),
        HourSum(datetime(2026, 5, 4, 11, 30, tzinfo=UTC), 3, 150.0, 90.0),
    ]
    dates = [date(2026, 5, 2), date(2026, 5, 3), date(2026, 5, 4)]
    folded = daily_latency("api", "api-health", hours, dates, kolkata)
    assert folded.days == (
        DayLatency(date(2026, 5, 2), 0, None, None),
        DayLatency(date(2026, 5, 3), 2, 150.0, 200.0),
        DayLatency(date(2026, 5, 4), 4, 50.0, 90.0),
    )
    assert folded.mean_ms == 500.0 / 6


def test_the_chart_draws_daily_means_and_breaks_where_a_day_has_none() -> None:
    days = [date(2026, 5, d) for d in range(1, 6)]
    means = [40.0, None, 90.0, 150.0, 60.0]
    latency = Latency(
        "api",
        "api-health",
        tuple(DayLatency(d, 1 if m else 0, m, m) for d, m in zip(days, means, strict=True)),
    )
    chart = latency_chart(latency)
    assert chart is not None
    assert chart.top_ms == 200.0  # 150 ms rounds up to a scale of 1, 2 or 5
    # A step across each day; y: 1 (top) to 39 (zero) in a 40 high box.
    assert chart.path == "M0 31.4 H1 M2 21.9 H3 V10.5 H4 V27.6 H5"
    assert chart.summary == (
        "Response time over 5 days: 85 ms on average, the slowest day 4 May 2026 at 150 ms, "
        "today 60 ms"
    )
    silent = Latency("api", "api-health", tuple(DayLatency(d, 0, None, None) for d in days))
    assert latency_chart(silent) is None
    assert [duration(ms) for ms in (0.4, 87.0, 999.4, 999.6, 1250.0)] == [
        "0 ms",
        "87 ms",
        "999 ms",
        "1.00 s",
        "1.25 s",
    ]


async def make_page(app: RunningApp) -> None:
    put = app.client.put
    assert (
        await put("/v1/status-pages/acme", headers=app.admin, json={"title": "Acme"})
    ).status_code == 201
    for component in ("api", "web"):
        made = await put(f"/v1/status-pages/acme/components/{component}", headers=app.admin)
        assert made.status_code == 201, made.text


async def test_stored_results_feed_the_page_s_chart_and_its_json(running_app: RunningApp) -> None:
    app = running_app
    await make_page(app)
    made = await app.client.put(
        "/v1/checks/api-health",
        headers=app.admin,
        json={
            "url": "https://example.com/health",
            "enabled": False,  # the runner leaves it alone: the results below are ours
            "page": "acme",
            "component": "api",
        },
    )
    assert made.status_code == 201, made.text
    opened = app.services.capabilities["status-pages"]
    assert isinstance(opened, StatusPagesOpened)
    store = opened.checks.store
    tenant = await app.services.stores.control.get_tenant("default")
    assert tenant is not None
    check = await store.get(tenant.id, "api-health")
    assert check is not None

    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    results = [
        (midnight - timedelta(days=2, hours=-12), True, 100.0),
        (midnight - timedelta(days=2, hours=-12, minutes=-1), True, 300.0),  # same quarter
        (midnight - timedelta(days=1, hours=-6), False, 10_000.0),  # a timeout: left out
        (midnight - timedelta(days=1, hours=-7), True, 60.0),
        (midnight, True, 80.0),
    ]
    for at, ok, ms in results:
        result = CheckResult(at, ok, ms, 200 if ok else None, None if ok else "timed out")
        assert await store.record(tenant.id, check, result) is not None

    # As the runner does after a passing result: the page's cached rendering (made as the page
    # was set up) is invalidated, and the next one draws the chart.
    await app.services.platform.ingest.publish(
        tenant.ref, INTERNAL_BUS, [events.changed("acme", "latency", "api-health", midnight)]
    )

    async def charts_drawn() -> list[str]:
        page = await app.client.get("/status/acme")
        assert page.status_code == 200
        return re.findall(r'<figure class="latency">.*?</figure>', page.text, re.S)

    charts = await eventually(charts_drawn, what="the page with its latency chart")
    assert len(charts) == 1  # api's; web has no check
    (chart,) = charts
    assert '<path d="M87 1.0 H88 V27.6 H89 V23.8 H90"/>' in chart
    assert (
        "Response time over 90 days: 135 ms on average, the slowest day "
        f"{(midnight - timedelta(days=2)).day} " in chart
    )
    assert "today 80 ms" in chart

    components = (await app.client.get("/status/acme/api/v2/components.json")).json()
    by_id = {c["id"]: c for c in components["components"]}
    assert "stellwerk_latency" not in by_id["web"]
    assert by_id["api"]["stellwerk_latency"] == {
        "check": "api-health",
        "days": [
            {
                "date": (midnight - timedelta(days=2)).date().isoformat(),
                "count": 2,
                "mean_ms": 200.0,
                "max_ms": 300.0,
            },
            {
                "date": (midnight - timedelta(days=1)).date().isoformat(),
                "count": 1,
                "mean_ms": 60.0,
                "max_ms": 60.0,
            },
            {"date": midnight.date().isoformat(), "count": 1, "mean_ms": 80.0, "max_ms": 80.0},
        ],
    }
    # The summary, which widgets poll, stays Statuspage's shape.
    summary = (await app.client.get("/status/acme/api/v2/summary.json")).json()
    assert all("stellwerk_latency" not in c for c in summary["components"])

    # Deleting the check deletes its sums with its results.
    assert (await app.client.delete("/v1/checks/api-health", headers=app.admin)).status_code == 204
    since = midnight - timedelta(days=3)
    assert await store.hourly_latency(tenant.id, "acme", since, timedelta(0)) == {}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver, runner = await start_receiver("127.0.0.1")
    try:
        yield receiver
    finally:
        receiver.closing.set()
        await runner.cleanup()


@pytest.fixture
async def checking_app(tmp_path: Path) -> AsyncIterator[RunningApp]:
    settings = load_settings({"data_dir": str(tmp_path / "data"), "allow_private_targets": True})
    async with app_running(settings) as running:
        yield running


async def test_the_runner_s_first_result_refreshes_a_cached_page(
    checking_app: RunningApp, receiver: Receiver
) -> None:
    app = checking_app

    async def health(_request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")

    receiver.on("/health", health)
    await make_page(app)
    first = await app.client.get("/status/acme")  # rendered and cached without a chart
    assert 'class="latency"' not in first.text
    before = len(await internal_events(app, CHANGED))
    spec = {"url": receiver.url("/health"), "interval_seconds": 1, "page": "acme"}
    made = await app.client.put(
        "/v1/checks/api-health", headers=app.admin, json={**spec, "component": "api"}
    )
    assert made.status_code == 201, made.text

    async def page() -> str:
        return (await app.client.get("/status/acme")).text

    shown = await eventually(page, accept=lambda text: 'class="latency"' in text, within=10)
    assert "Response time over 90 days" in shown
    # The component stayed operational: what refreshed the page is the runner's invalidation.
    changes = [e["data"] for e in await internal_events(app, CHANGED)][before:]
    assert changes[0] == {"page": "acme", "kind": "latency", "id": "api-health"}
    assert all(c["kind"] == "latency" for c in changes)

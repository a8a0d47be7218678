"""Login attempt limits shared across processes, on SQLite and PostgreSQL: the GCRA buckets in
the database with a clock we move, two limiters on two engines (two processes) drawing from one
budget, and two whole apps on one database enforcing one limit on a private page's login."""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from tests.conftest import RunningApp, app_running

from stellwerk.config import load_settings
from stellwerk.service import TooManyRequests
from stellwerk.statuspages.attempts import PER_CLIENT, Attempts, DatabaseLimits, Rate
from stellwerk.statuspages.tables import login_limits

PASSWORD = "correct horse battery"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 4, 12, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def engines(running_app: RunningApp) -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
    """Two engines on the app's (migrated) database: two processes' connections."""
    url = running_app.settings.database_url
    assert url is not None
    one, two = create_async_engine(url), create_async_engine(url)
    try:
        yield one, two
    finally:
        await one.dispose()
        await two.dispose()


async def test_a_bucket_allows_its_burst_then_one_per_interval(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    clock = Clock()
    limits = DatabaseLimits(engines[0], clock)
    rate = Rate(burst=3, every=6.0)
    assert [await limits.take("client acme 10.0.0.1", rate) for _ in range(3)] == [0.0] * 3
    assert await limits.take("client acme 10.0.0.1", rate) == 6.0
    assert await limits.take("client acme 10.0.0.2", rate) == 0.0  # another key, its own
    clock.now += timedelta(seconds=2)
    assert await limits.take("client acme 10.0.0.1", rate) == 4.0  # refused: nothing taken
    clock.now += timedelta(seconds=4)
    assert await limits.take("client acme 10.0.0.1", rate) == 0.0
    assert await limits.take("client acme 10.0.0.1", rate) == 6.0
    clock.now += timedelta(seconds=18)  # full again
    assert [await limits.take("client acme 10.0.0.1", rate) for _ in range(4)] == [
        0.0,
        0.0,
        0.0,
        6.0,
    ]


async def test_two_processes_draw_from_one_budget_and_full_keys_are_swept(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    clock = Clock()
    one, two = DatabaseLimits(engines[0], clock), DatabaseLimits(engines[1], clock)
    rate = Rate(burst=4, every=1.0)
    taken = [await (one if n % 2 else two).take("page acme", rate) for n in range(5)]
    assert taken == [0.0, 0.0, 0.0, 0.0, 1.0]
    assert await one.take("page acme", rate) == 1.0

    # A day later every key is full again: the next new key's insert sweeps them away.
    clock.now += timedelta(days=1)
    await two.take("page other", rate)
    async with engines[0].connect() as conn:
        keys = (await conn.execute(sa.select(login_limits.c.key))).scalars().all()
    assert keys == ["page other"]


async def log_in(client: httpx.AsyncClient, password: str) -> int:
    form = await client.get("/status/acme/login")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token is not None
    sent = await client.post(
        "/status/acme/login", data={"csrf": token.group(1), "password": password}
    )
    return sent.status_code


async def test_two_gateways_on_one_database_enforce_one_limit(
    running_app: RunningApp, tmp_path: Path
) -> None:
    first = running_app
    made = await first.client.put(
        "/v1/status-pages/acme",
        headers=first.admin,
        json={"title": "Acme", "visibility": "private"},
    )
    assert made.status_code == 201, made.text
    await first.client.put(
        "/v1/status-pages/acme/access", headers=first.admin, json={"password": PASSWORD}
    )
    # The second gateway finds the tenant made: it gets its keys as an operator would.
    (tmp_path / "second").mkdir()
    shutil.copy(first.settings.data_dir / "bootstrap.json", tmp_path / "second")
    settings = load_settings(
        {"data_dir": str(tmp_path / "second"), "database_url": first.settings.database_url}
    )
    async with app_running(settings, alone=False) as second:
        # Both gateways see the same reader (the same address): half the guesses on each.
        answers = [
            await log_in((first if n % 2 else second).client, f"guess {n}")
            for n in range(PER_CLIENT.burst)
        ]
        assert answers == [401] * PER_CLIENT.burst
        assert await log_in(first.client, PASSWORD) == 429
        assert await log_in(second.client, PASSWORD) == 429


async def test_the_process_limit_on_all_attempts_comes_before_the_database() -> None:
    class Counting:
        def __init__(self) -> None:
            self.calls = 0

        async def take(self, key: str, rate: Rate) -> float:
            self.calls += 1
            return 0.0

    shared = Counting()
    attempts = Attempts(shared, clock=lambda: 0.0)  # a clock that stands still: no refill
    for n in range(40):
        await attempts.take("acme", f"10.0.0.{n}")
    with pytest.raises(TooManyRequests) as refused:
        await attempts.take("acme", "10.0.1.1")
    assert refused.value.retry_after_seconds == 1
    assert shared.calls == 80  # two shared keys an attempt; none for the one refused here

"""Fixtures shared by every test folder: databases, a running app, free ports."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import msgspec
import pytest
from tests.nats_support import free_port as free_port  # shared by every test folder
from tests.nats_support import nats_cluster, nats_server  # noqa: F401 (fixtures)

from stellwerk.app import build_app
from stellwerk.compose import Services
from stellwerk.config import Settings, load_settings

POSTGRES_ADMIN_DSN = os.environ.get(
    "STELLWERK_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI") == "true"

# Marks that follow from what a test uses, so that none can be forgotten: a test that asks for
# one of these fixtures, or runs once per backend with one of these parameters (the backend's
# fixture asks for its server by `getfixturevalue`, which collection cannot see), gets the mark.
# Tests that start `stellwerk serve` or other processes themselves carry `slow` in their module.
SLOW_FIXTURES = frozenset({"nats_server", "nats_cluster"})  # a nats-server process each
POSTGRES_FIXTURES = frozenset({"postgres_available", "postgres_url"})
SLOW_PARAMS = frozenset({"nats"})
POSTGRES_PARAMS = frozenset({"postgres"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        callspec = getattr(item, "callspec", None)
        params = {v for v in (callspec.params.values() if callspec else ()) if isinstance(v, str)}
        if used & SLOW_FIXTURES or params & SLOW_PARAMS:
            item.add_marker(pytest.mark.slow)
        if used & POSTGRES_FIXTURES or params & POSTGRES_PARAMS:
            item.add_marker(pytest.mark.postgres)


async def _postgres_reachable() -> str | None:
    try:
        conn = await asyncpg.connect(POSTGRES_ADMIN_DSN, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"PostgreSQL at {POSTGRES_ADMIN_DSN} is not reachable: {exc}"
    await conn.close()
    return None


@pytest.fixture(scope="session")
def postgres_available() -> None:
    problem = asyncio.run(_postgres_reachable())
    if problem is None:
        return
    if IN_CI:
        pytest.fail(f"{problem} (CI=true: PostgreSQL is required)")
    pytest.skip(problem)


@pytest.fixture
def postgres_url(postgres_available: None) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    name = f"stellwerk_test_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(POSTGRES_ADMIN_DSN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The control plane database, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'control.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


class Bootstrap(msgspec.Struct):
    tenant: str
    admin_key: str
    ingest_key: str


@dataclass
class RunningApp:
    client: httpx.AsyncClient
    services: Services
    settings: Settings
    bootstrap: Bootstrap

    def auth(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    @property
    def admin(self) -> dict[str, str]:
        return self.auth(self.bootstrap.admin_key)


@asynccontextmanager
async def app_running(settings: Settings) -> AsyncIterator[RunningApp]:
    """The whole ASGI app of `settings` with its lifespan, talked to in-process; after its
    shutdown, no task of it may still run."""
    app = build_app(settings)
    async with app.router.lifespan_context(app):
        services = await asyncio.wait_for(app.state.lifecycle.wait_started(), 30)
        bootstrap = msgspec.json.decode(
            (settings.data_dir / "bootstrap.json").read_bytes(), type=Bootstrap
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://stellwerk") as client:
            yield RunningApp(client, services, settings, bootstrap)
    await assert_no_task_left()


@pytest.fixture
async def running_app(tmp_path: Path, database_url: str) -> AsyncIterator[RunningApp]:
    """The whole ASGI app with its lifespan, on SQLite and on PostgreSQL, talked to in-process."""
    settings = load_settings({"data_dir": str(tmp_path / "data"), "database_url": database_url})
    async with app_running(settings) as running:
        yield running


async def assert_no_task_left() -> None:
    """After an app's shutdown nothing of it may still run: a task left behind (one cancelled
    halfway through a control-plane query) once hung the test's event loop at its close."""
    await asyncio.sleep(0)  # tasks that have just been told to end take their last step
    left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
    assert left == [], f"tasks left running after shutdown: {[t.get_coro() for t in left]}"

"""Fixtures shared by every test folder: databases, a running app, free ports."""

from __future__ import annotations

import asyncio
import compileall
import contextlib
import os
import shutil
import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import hypothesis
import msgspec
import pytest
import structlog
import uvicorn
from tests import polling
from tests.nats_support import free_port as free_port  # shared by every test folder
from tests.nats_support import nats_cluster, nats_server  # noqa: F401 (fixtures)

from stellwerk.app import build_app
from stellwerk.capability import Capability
from stellwerk.compose import Services
from stellwerk.config import Settings, load_settings
from stellwerk.statuspages import StatusPagesOpened

POSTGRES_ADMIN_DSN = os.environ.get(
    "STELLWERK_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI") == "true"
PACKAGE = Path(__file__).resolve().parents[1] / "src" / "stellwerk"

# Marks that follow from what a test uses, so that none can be forgotten: a test that asks for
# one of these fixtures, or runs once per backend with one of these parameters (the backend's
# fixture asks for its server by `getfixturevalue`, which collection cannot see), gets the mark.
# Tests that start `stellwerk serve` or other processes themselves carry `slow` in their module.
SLOW_FIXTURES = frozenset({"nats_server", "nats_cluster"})  # a nats-server process each
POSTGRES_FIXTURES = frozenset({"postgres_available", "postgres_url"})
SLOW_PARAMS = frozenset({"nats"})
POSTGRES_PARAMS = frozenset({"postgres"})

# Seconds a status page's first reader waits before the skeleton, in tests (app_running).
TEST_RENDER_BUDGET = 60.0


def pytest_sessionstart(session: pytest.Session) -> None:
    """Compile the package's bytecode once, for the processes the suite starts.

    Under PYTHONDONTWRITEBYTECODE (set on the CI machine) no process writes it, so every
    `stellwerk` process the tests start (hundreds) compiled the package's ~220 modules from
    source again: about 0.5 s of CPU a start. Bytecode that exists is still read; writing it
    here, as the Dockerfile does at build time, leaves only what Python does anyway.
    `compile_dir` skips files whose bytecode is current."""
    if sys.dont_write_bytecode:
        compileall.compile_dir(PACKAGE, quiet=1)


def pytest_configure(config: pytest.Config) -> None:
    """structlog's default console renderer draws an exception with rich, every frame's locals
    included: a second of CPU on this machine for a store's traceback. A loop failing against a
    store that is down (tests do that on purpose) then starves the event loop, and a probe the
    test waits for answers late. The server formats tracebacks as plain text
    (`stellwerk.ops.logging`); the tests' default renderer does the same."""
    processors = list(structlog.get_config()["processors"])
    processors[-1] = structlog.dev.ConsoleRenderer(
        exception_formatter=structlog.dev.plain_traceback
    )
    structlog.configure(processors=processors)
    # Hypothesis' per-example deadline (200 ms) is a timing assertion on wall time: on this
    # shared 2-core machine a neighbour's burst or a library's first-call set-up (ua-parser's
    # rules) crossed it and failed a test that checks behaviour. No deadline, anywhere.
    hypothesis.settings.register_profile("stellwerk", deadline=None)
    hypothesis.settings.load_profile("stellwerk")


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


async def _postgres_admin(sql: str, database: str | None = None) -> list[asyncpg.Record]:
    """Run `sql` as the admin, in the admin database or in `database`."""
    dsn = POSTGRES_ADMIN_DSN
    if database is not None:
        dsn = f"{dsn.rsplit('/', 1)[0]}/{database}"
    conn = await asyncpg.connect(dsn)
    try:
        rows: list[asyncpg.Record] = await conn.fetch(sql)
        return rows
    finally:
        await conn.close()


def _postgres_url(name: str) -> str:
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"


@contextmanager
def _postgres_database(template: str | None = None) -> Iterator[str]:
    name = f"stellwerk_test_{uuid.uuid4().hex[:12]}"
    copied = f' TEMPLATE "{template}"' if template else ""
    asyncio.run(_postgres_admin(f'CREATE DATABASE "{name}"{copied}'))
    try:
        yield name
    finally:
        asyncio.run(_postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def postgres_url(postgres_available: None) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    with _postgres_database() as name:
        yield _postgres_url(name)


def _migrated_by_a_first_start(database_url: str, data_dir: Path) -> None:
    """Start the whole app once on an empty database, so that the control plane and every
    capability migrate it as a first start does, then empty every table but Alembic's version
    tables. What is left is the database at the head of every migration chain, without rows.
    (No migration inserts rows; one that did would need them kept here.)"""
    settings = load_settings({"data_dir": str(data_dir), "database_url": database_url})

    async def start_and_stop() -> None:
        async with app_running(settings):
            pass

    asyncio.run(start_and_stop())


def _filled_tables(names: Sequence[str]) -> list[str]:
    return [name for name in names if not name.startswith("alembic_version")]


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A control plane SQLite file at the head of every migration chain, without rows."""
    root = tmp_path_factory.mktemp("sqlite-template")
    started = root / "started.db"
    _migrated_by_a_first_start(f"sqlite+aiosqlite:///{started}", root / "data")
    template = root / "control.db"
    with contextlib.closing(sqlite3.connect(started)) as conn:
        tables = [
            row[0] for row in conn.execute("SELECT name FROM sqlite_schema WHERE type='table'")
        ]
        conn.execute("PRAGMA foreign_keys=OFF")
        for table in _filled_tables(tables):
            conn.execute(f'DELETE FROM "{table}"')  # sqlite_sequence too: ids start at 1 again
        conn.commit()
        conn.execute("VACUUM INTO ?", (str(template),))  # one file, no WAL beside it
    return template


@pytest.fixture(scope="session")
def postgres_template(
    postgres_available: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A PostgreSQL database at the head of every migration chain, without rows: each test's
    copy of it (`CREATE DATABASE ... TEMPLATE`) costs a file copy instead of a first start's
    migrations (0.5 s a test less on two cores)."""
    with _postgres_database() as name:
        data_dir = tmp_path_factory.mktemp("postgres-template") / "data"
        _migrated_by_a_first_start(_postgres_url(name), data_dir)
        rows = asyncio.run(
            _postgres_admin("SELECT tablename FROM pg_tables WHERE schemaname = 'public'", name)
        )
        filled = ", ".join(f'"{t}"' for t in _filled_tables([row[0] for row in rows]))
        asyncio.run(_postgres_admin(f"TRUNCATE {filled} RESTART IDENTITY CASCADE", name))
        yield name


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The control plane database, once on SQLite and once on PostgreSQL, migrated and empty:
    a copy of a template that a first start migrated once a session (`empty_database_url`
    for tests of the migrations themselves)."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        shutil.copyfile(template, tmp_path / "control.db")
        yield f"sqlite+aiosqlite:///{tmp_path / 'control.db'}"
        return
    with _postgres_database(template=request.getfixturevalue("postgres_template")) as name:
        yield _postgres_url(name)


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The control plane database, once on SQLite and once on PostgreSQL, empty: no table yet."""
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
async def app_running(
    settings: Settings, capabilities: Sequence[Capability] | None = None, *, alone: bool = True
) -> AsyncIterator[RunningApp]:
    """The whole ASGI app of `settings` with its lifespan, talked to in-process; after its
    shutdown, no task of it may still run. `capabilities`: as `build_app` takes them.
    `alone=False` for a second app beside one still running (a second gateway): the tasks
    left then are the other app's, which checks them at its own shutdown."""
    app = build_app(settings, capabilities=capabilities)
    async with app.router.lifespan_context(app):
        services = await asyncio.wait_for(app.state.lifecycle.wait_started(), 30)
        for opened in services.capabilities.values():
            if isinstance(opened, StatusPagesOpened):
                # A reader waits 200 ms for a first rendering, then gets the skeleton: on a
                # loaded test machine a small page can take longer, and a test reading the page
                # would read the skeleton. Tests of the budget set it themselves.
                opened.cache.render_budget = TEST_RENDER_BUDGET
        bootstrap = msgspec.json.decode(
            (settings.data_dir / "bootstrap.json").read_bytes(), type=Bootstrap
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://stellwerk") as client:
            yield RunningApp(client, services, settings, bootstrap)
    if alone:
        await assert_no_task_left()


# What a client in a test waits for an answer from a server on loopback: far above any answer's
# time on a quiet machine, so that a test only fails on this bound when something is stuck (at a
# load average of 12 a 5-second connect, httpx's default, once ran out).
LOOPBACK_TIMEOUT = 30.0


@asynccontextmanager
async def app_served(settings: Settings, **config: Any) -> AsyncIterator[tuple[str, RunningApp]]:
    """The whole app behind uvicorn on `settings.port` on loopback, for real clients (SDKs, a
    browser, the command line) to talk to; `config`: more of `uvicorn.Config`. It is yielded once
    uvicorn listens, which comes after the app's start: the lifespan runs before the bind. The
    `RunningApp`'s client talks to it over that socket."""
    app = build_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=settings.port, log_config=None, lifespan="on", **config
        )
    )
    serving = asyncio.create_task(server.serve())
    try:
        services = await asyncio.wait_for(app.state.lifecycle.wait_started(), 30)
        await polling.eventually(lambda: server.started, what="uvicorn listening", within=30)
        bootstrap = msgspec.json.decode(
            (settings.data_dir / "bootstrap.json").read_bytes(), type=Bootstrap
        )
        url = f"http://127.0.0.1:{settings.port}"
        async with httpx.AsyncClient(base_url=url, timeout=LOOPBACK_TIMEOUT) as client:
            yield url, RunningApp(client, services, settings, bootstrap)
    finally:
        server.should_exit = True
        await serving


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

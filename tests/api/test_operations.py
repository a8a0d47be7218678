"""Probes, metrics and the OpenAPI document of the real app."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import httpx
from openapi_spec_validator import validate
from prometheus_client.parser import text_string_to_metric_families
from tests.conftest import RunningApp
from tests.polling import eventually

from stellwerk.app import build_app
from stellwerk.config import load_settings


async def test_probes_when_ready(running_app: RunningApp) -> None:
    client = running_app.client
    assert (await client.get("/livez")).json() == {"status": "ok"}
    assert (await client.get("/startupz")).json() == {"status": "started"}
    assert (await client.get("/readyz")).json() == {"status": "ready"}


async def test_readiness_follows_the_phases(tmp_path: Path, postgres_url: str) -> None:
    """Not ready while the store is down at start, ready once it answers, not while draining."""
    name = postgres_url.rsplit("/", 1)[1]
    admin_dsn = postgres_url.replace("+asyncpg", "").rsplit("/", 1)[0] + "/test"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE "{name}"')  # the store is unreachable at start
        settings = load_settings({"data_dir": str(tmp_path), "database_url": postgres_url})
        app = build_app(settings)
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://s") as client,
        ):
            assert (await client.get("/livez")).status_code == 200
            starting = await client.get("/readyz")
            assert starting.status_code == 503
            assert starting.json()["status"] == "starting"
            startup = await client.get("/startupz")
            assert startup.status_code == 503
            refused = await client.get("/v1/buses", headers={"Authorization": "Bearer x"})
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "1"

            await conn.execute(f'CREATE DATABASE "{name}"')  # the store comes back: start completes
            await asyncio.wait_for(app.state.lifecycle.wait_started(), 30)
            assert (await client.get("/readyz")).status_code == 200
            assert (await client.get("/startupz")).status_code == 200

            # The store goes away while running: not ready, but alive.
            await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            gone = await client.get("/readyz")
            assert gone.status_code == 503
            assert gone.json()["reason"] == "control plane unreachable"
            assert (await client.get("/livez")).status_code == 200
            await conn.execute(f'CREATE DATABASE "{name}"')
            # Ready again without a restart; the first ping after the drop may still spend its
            # time reconnecting the pool on a loaded machine, so the probe is asked until it is.
            await eventually(
                lambda: client.get("/readyz"),
                what="/readyz ready again once the control plane is back",
                accept=lambda answer: answer.status_code == 200,
                every=0.2,
            )

            app.state.lifecycle.drain()
            draining = await client.get("/readyz")
            assert draining.status_code == 503
            assert draining.json()["status"] == "draining"
    finally:
        await conn.close()  # also when an assertion failed: no socket left for a later test


async def test_metrics_count_requests_by_route_template(running_app: RunningApp) -> None:
    client = running_app.client
    await client.get("/v1/buses/default", headers=running_app.admin)
    await client.get("/v1/buses/nope", headers=running_app.admin)
    await client.get("/v1/buses/default")
    text = (await client.get("/metrics")).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }

    def requests(status: str) -> float:
        key = (
            "stellwerk_http_requests_total",
            (("method", "GET"), ("route", "/v1/buses/{bus}"), ("status", status)),
        )
        return samples.get(key, 0.0)

    assert requests("200") == 1
    assert requests("404") == 1
    assert requests("401") == 1
    names = {name for name, _ in samples}
    assert "process_resident_memory_bytes" in names
    assert "process_cpu_seconds_total" in names


async def test_openapi_document_is_valid_3_1_and_covers_the_api(running_app: RunningApp) -> None:
    document = (await running_app.client.get("/openapi.json")).json()
    validate(document)
    assert document["openapi"].startswith("3.1")
    paths = document["paths"]
    for path, method in [
        ("/v1/buses", "get"),
        ("/v1/buses/{bus}", "put"),
        ("/v1/buses/{bus}", "delete"),
        ("/v1/keys", "post"),
        ("/readyz", "get"),
    ]:
        assert method in paths[path], (path, method)
    assert "BusInput" in document["components"]["schemas"]


async def test_stopping_right_after_the_start_leaves_no_task_behind(tmp_path: Path) -> None:
    """The scheduler starts its work in a task of its own; a stop that comes first must still
    find and end all of it. A task left querying the closed control plane hung the shutdown of
    the test's event loop (seen as a teardown timeout)."""
    settings = load_settings({"data_dir": str(tmp_path / "data")})
    for _ in range(10):
        app = build_app(settings)
        async with app.router.lifespan_context(app):
            await asyncio.wait_for(app.state.lifecycle.wait_started(), 30)
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert left == [], [t.get_name() for t in left]

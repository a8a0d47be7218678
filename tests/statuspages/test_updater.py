"""The content updater: it keeps L2 (a real Redis) fresh from the tenants' internal buses, and
resumes from its durable cursor, so changes made while it was down still reach L2."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest
import redis
import sqlalchemy as sa
from tests.conftest import RunningApp, app_running
from tests.polling import eventually

from stellwerk.config import load_settings
from stellwerk.refs import TenantId
from stellwerk.statuspages import StatusPagesOpened
from stellwerk.statuspages.cache import Entry
from stellwerk.statuspages.tables import cache_cursors
from stellwerk.statuspages.updater import ContentUpdater, CursorStore, _TenantUpdater


@pytest.fixture
def redis_url() -> str:
    client = redis.Redis(port=6379, socket_timeout=1)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.skip(f"no Redis on 6379: {exc}")
    finally:
        client.close()
    return "redis://127.0.0.1:6379/0"


def opened_of(app: RunningApp) -> StatusPagesOpened:
    opened = app.services.capabilities["status-pages"]
    assert isinstance(opened, StatusPagesOpened)
    return opened


async def set_status(app: RunningApp, status: str) -> None:
    made = await app.client.put(
        "/v1/status-pages/acme/components/api",
        headers=app.admin,
        json={"name": "API", "status": status},
    )
    assert made.status_code in (200, 201), made.text


def in_l2(tenant_id: TenantId) -> str:
    client = redis.Redis(port=6379)
    try:
        raw = client.hget(f'stellwerk:sp:{tenant_id}:acme:[null,"page","/status/acme"]', "entry")
    finally:
        client.close()
    return msgspec.msgpack.decode(raw, type=Entry).body.decode() if isinstance(raw, bytes) else ""


async def test_the_updater_renders_into_redis_and_resumes_from_its_cursor(
    tmp_path: Path, redis_url: str
) -> None:
    # A gateway alone: no scheduler, so the only content updaters are the ones started here.
    settings = load_settings(
        {"data_dir": str(tmp_path / "data"), "redis_url": redis_url, "role": "gateway"}
    )
    async with app_running(settings) as app:
        opened = opened_of(app)
        opened.cache.render_budget = 60.0
        made = await app.client.put(
            "/v1/status-pages/acme", headers=app.admin, json={"title": "Acme"}
        )
        assert made.status_code == 201
        await set_status(app, "operational")
        assert (await app.client.get("/status/acme")).status_code == 200  # a key in L2
        tenant = await app.services.stores.control.get_tenant("default")
        assert tenant is not None
        cursors = CursorStore(app.services.stores.control.engine)

        def start() -> asyncio.Task[None]:
            updater = ContentUpdater(app.services.platform, cursors, opened.cache)
            return asyncio.create_task(updater.run())

        running = start()
        await set_status(app, "major_outage")
        await eventually(
            lambda: asyncio.to_thread(in_l2, tenant.id),
            accept=lambda html: "Major System Outage" in html,
            within=10,
        )
        saved = await eventually(lambda: cursors.get(tenant.id), within=10)
        assert saved is not None
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)

        # While no updater runs, the page changes; the next one starts from the cursor.
        await set_status(app, "partial_outage")
        assert "Major System Outage" in await asyncio.to_thread(in_l2, tenant.id)
        running = start()
        await eventually(
            lambda: asyncio.to_thread(in_l2, tenant.id),
            accept=lambda html: "Partial System Outage" in html,
            within=10,
        )
        later = await eventually(
            lambda: cursors.get(tenant.id), accept=lambda p: p is not None and p > saved
        )
        assert later is not None
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        async with app.services.stores.control.engine.connect() as conn:
            rows = (await conn.execute(sa.select(cache_cursors))).all()
        assert [row.tenant_id for row in rows] == [tenant.id]


async def test_the_cursor_never_passes_a_change_not_yet_rendered(
    tmp_path: Path, redis_url: str
) -> None:
    settings = load_settings(
        {"data_dir": str(tmp_path / "data"), "redis_url": redis_url, "role": "gateway"}
    )
    async with app_running(settings) as app:
        cache = opened_of(app).cache
        assert cache.l2 is not None
        cursors = CursorStore(app.services.stores.control.engine)
        tenant = _TenantUpdater(TenantId("t"), 10, cursors, cache, cache.l2)
        assert tenant.cursor() == 10
        tenant.changed(None, 11)  # an event of no page: nothing to render
        assert tenant.cursor() == 11
        tenant.changed("acme", 12)
        tenant.changed("other", 13)
        tenant.changed("acme", 14)
        assert tenant.cursor() == 11  # before acme's first unrendered change
        await tenant.close()

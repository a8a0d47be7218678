"""The content updater: keeps L2 (Redis) fresh, one across the deployment, losing nothing.

It follows every tenant's internal bus from a durable cursor (`sp_cache_cursors`), and on each
invalidation re-renders the page's keys that L2 holds (coalesced as the gateways coalesce, see
`cache.py`), writing each with the position it reflects. The cursor only passes an event once
the page it names has been rendered after it, so a crash (or Redis out of reach) costs renders
again, never an invalidation. It runs under `CapabilityContext.singleton` in the scheduler role,
and only with `--redis-url`: without L2 each gateway's own follower is all there is.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Final

import msgspec
import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from stellwerk.clock import to_us, utc_now
from stellwerk.refs import TenantId
from stellwerk.service import NotFound, Platform
from stellwerk.statuspages.cache import L2, Entry, PageCache, due
from stellwerk.statuspages.events import CHANGED, INTERNAL_BUS
from stellwerk.statuspages.tables import cache_cursors

log = structlog.get_logger(__name__)

ACTOR: Final = "status-content-updater"
RESCAN_SECONDS: Final = 5.0  # how often new tenants (and new internal buses) are looked for
SAVE_SECONDS: Final = 0.5  # how often a moved cursor is written
RETRY_SECONDS: Final = 2.0  # after a failed render or Redis out of reach
_PATTERN: Final = msgspec.json.encode({"type": [CHANGED]}).decode()


class CursorStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def get(self, tenant_id: TenantId) -> int | None:
        async with self._engine.connect() as conn:
            found = await conn.execute(
                sa.select(cache_cursors.c.position).where(cache_cursors.c.tenant_id == tenant_id)
            )
            return found.scalar()

    async def put(self, tenant_id: TenantId, position: int) -> None:
        # One writer (the singleton), so update-or-insert needs no dialect's upsert.
        values = {"position": position, "updated_at": to_us(utc_now())}
        async with self._engine.begin() as conn:
            updated = await conn.execute(
                cache_cursors.update()
                .where(cache_cursors.c.tenant_id == tenant_id)
                .values(**values)
            )
            if not updated.rowcount:
                await conn.execute(cache_cursors.insert().values(tenant_id=tenant_id, **values))


@dataclass
class _Pending:
    first: int  # the first position not yet rendered
    since: float
    last_change: float


class ContentUpdater:
    def __init__(self, platform: Platform, cursors: CursorStore, cache: PageCache) -> None:
        assert cache.l2 is not None, "the content updater writes L2: it needs --redis-url"
        self._platform = platform
        self._cursors = cursors
        self._cache = cache
        self._l2: L2 = cache.l2
        self._tenants: dict[TenantId, asyncio.Task[None]] = {}

    async def run(self) -> None:
        """Follow every tenant (new ones as they come) until cancelled."""
        try:
            while True:
                for tenant in await self._platform.tenants.all():
                    task = self._tenants.get(tenant.id)
                    if task is None or task.done():
                        self._tenants[tenant.id] = asyncio.create_task(self._follow(tenant.id))
                await asyncio.sleep(RESCAN_SECONDS)
        finally:
            tasks = list(self._tenants.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._tenants.clear()

    async def _follow(self, tenant_id: TenantId) -> None:
        tail = self._platform.tail
        principal = await self._platform.tenants.acting(tenant_id, ACTOR)
        cursor = await self._cursors.get(tenant_id)
        try:
            after, pattern = await tail.open(principal, INTERNAL_BUS, _PATTERN, cursor or 0)
        except NotFound:
            return  # no internal bus yet: looked for again at the next scan
        follower = _TenantUpdater(tenant_id, after, self._cursors, self._cache, self._l2)
        try:
            async for event in tail.follow(principal, INTERNAL_BUS, after, pattern, keepalive=1):
                if event is not None:
                    page = (msgspec.json.decode(event.body).get("data") or {}).get("page")
                    follower.changed(page if isinstance(page, str) else None, event.position)
                await follower.save()
        finally:
            await follower.close()


class _TenantUpdater:
    """One tenant's pages pending a render, and the cursor that follows from them."""

    def __init__(
        self, tenant_id: TenantId, after: int, cursors: CursorStore, cache: PageCache, l2: L2
    ) -> None:
        self._tenant_id = tenant_id
        self._read = after  # the last position read
        self._saved = after
        self._cursors = cursors
        self._cache = cache
        self._l2 = l2
        self._pending: dict[str, _Pending] = {}
        self._rendering: dict[str, int] = {}  # page: the first position its render covers
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._last_render: dict[str, float] = {}
        self._last_save = 0.0

    def changed(self, page: str | None, position: int) -> None:
        self._read = position
        if page is None:
            return
        now = time.monotonic()
        pending = self._pending.get(page)
        if pending is None:
            self._pending[page] = _Pending(position, now, now)
        else:
            pending.last_change = now
        if page not in self._tasks:
            self._tasks[page] = asyncio.create_task(self._refresh(page))

    def cursor(self) -> int:
        """Everything up to here is rendered: before the first position still pending."""
        waiting = [p.first for p in self._pending.values()] + list(self._rendering.values())
        return min(waiting) - 1 if waiting else self._read

    async def save(self) -> None:
        if time.monotonic() - self._last_save < SAVE_SECONDS:
            return
        position = self.cursor()
        if position != self._saved:
            await self._cursors.put(self._tenant_id, position)
            self._saved = position
        self._last_save = time.monotonic()

    async def _refresh(self, page: str) -> None:
        try:
            while page in self._pending:
                pending = self._pending[page]
                last = self._last_render.get(page, float("-inf"))
                wait = due(pending.since, pending.last_change, last) - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                del self._pending[page]
                self._rendering[page] = pending.first
                self._last_render[page] = time.monotonic()
                if not await self._render(page, self._read):
                    # Not done: pending again from the same position, tried again later.
                    again = self._pending.get(page)
                    first = min(pending.first, again.first) if again else pending.first
                    self._pending[page] = _Pending(first, time.monotonic(), time.monotonic())
                    del self._rendering[page]
                    await asyncio.sleep(RETRY_SECONDS)
                    continue
                del self._rendering[page]
        finally:
            self._tasks.pop(page, None)

    async def _render(self, page: str, as_of: int) -> bool:
        """Render the page's keys in L2 as of `as_of`; whether all of them were written."""
        keys = await self._l2.keys(self._tenant_id, page)
        if not self._l2.healthy:
            return False
        try:
            for key in keys:
                rendered = await self._cache.render(key)
                if rendered.status_code == 200:
                    await self._l2.put(key, Entry.of(rendered, as_of))
        except Exception:
            log.exception("the content updater could not render a status page", page=page)
            return False
        return self._l2.healthy

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            self._last_save = 0.0
            await self.save()

"""The layered cache of public renderings: L1 in the process, L2 in Redis (`--redis-url`).

Entries are keyed by (page, variant, audience), never by person. Each carries `as_of`, the
position on the tenant's internal bus of the last invalidation event it reflects; each process
follows the internal buses of the tenants it serves from their end and records, per page, the
position of the last `stellwerk.statuspage.changed` event. An entry is fresh while its `as_of`
is not older than that. A stale entry is still served (readers never wait for a render the
cache can serve) while a refresh renders in the background.

Refreshes are coalesced per page: the first change after a quiet spell renders at once, later
ones together once changes pause for `QUIET` or at the latest `MAX_DELAY` after the first of
them, so a burst of updates within a second costs two renders. With Redis, a gateway first
gives the content updater (`updater.py`, one across processes) `L2_GRACE` to put the new
rendering in L2, and renders only if it does not. A page-level change (title, visibility,
domains) drops the page's entries instead: a page made private is never served from the cache.
Redis out of reach costs one warning and a metric; pages are then served from L1 and rendered.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
import structlog
from prometheus_client import Counter
from redis import asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from stellwerk.ops import LoopCounter, Metrics
from stellwerk.refs import TenantId
from stellwerk.service import NotFound, Platform
from stellwerk.statuspages.events import CHANGED, INTERNAL_BUS
from stellwerk.statuspages.model import Page

log = structlog.get_logger(__name__)

QUIET: Final = 0.1  # changes closer together than this are one burst
MAX_DELAY: Final = 1.0  # ... rendered together at the latest this long after the first
L2_GRACE: Final = 0.3  # how long a gateway waits for the updater's rendering in L2
L2_TTL: Final = 86_400  # seconds an L2 entry lives unread
L2_TIMEOUT: Final = 0.25  # seconds a Redis call may take before it counts as down
L2_PAUSE: Final = 5.0  # after an error, L2 is left alone this long
RENDER_BUDGET: Final = 0.2  # seconds a reader waits for a first rendering before the skeleton
# Of the budget, kept for what its timer does not see: the loop finishing another step, a
# rendering thread's turn with the GIL, the skeleton itself and the way out (the bench's
# client saw 198-202 ms of a 200 ms budget with 5 ms kept, 202 ms with 10).
SKELETON_TIME: Final = 0.02
RESOLVED_TTL: Final = 5.0  # seconds a page found by name is kept without an event
MAX_ENTRIES: Final = 10_000
ACTOR: Final = "status-page-cache"
PUBLIC_CACHE_CONTROL: Final = "public, max-age=1, stale-while-revalidate=30"
PRIVATE_CACHE_CONTROL: Final = "private, no-cache"
_CHANGED_PATTERN: Final = msgspec.json.encode({"type": [CHANGED]}).decode()


class Key(msgspec.Struct, frozen=True, gc=False):
    """What a rendering is of: a page, a variant of it (`kind` and its arguments, such as
    `("page", "/status/acme")`) and an audience (None: everyone who may see the page). A
    struct: its hash and equality are C, and every cached read looks one up."""

    tenant_id: TenantId
    page: str
    variant: tuple[str, ...]
    audience: str | None = None

    @property
    def redis_key(self) -> str:
        return f"stellwerk:sp:{self.tenant_id}:{self.page}:{self.member}"

    @property
    def member(self) -> str:
        return msgspec.json.encode([self.audience, *self.variant]).decode()

    @classmethod
    def of_member(cls, tenant_id: TenantId, page: str, member: str) -> Key:
        audience, *variant = msgspec.json.decode(member)
        return cls(tenant_id, page, tuple(variant), audience)


def index_key(tenant_id: TenantId, page: str) -> str:
    """The Redis set of a page's keys in L2: what the content updater re-renders."""
    return f"stellwerk:sp:{tenant_id}:{page}:keys"


class Rendered(msgspec.Struct, frozen=True):
    body: bytes
    content_type: str
    status_code: int = 200


class Entry(msgspec.Struct, frozen=True):
    body: bytes
    content_type: str
    status_code: int
    etag: str
    as_of: int

    @classmethod
    def of(cls, rendered: Rendered, as_of: int) -> Entry:
        digest = hashlib.blake2b(rendered.body, digest_size=12).hexdigest()
        return cls(rendered.body, rendered.content_type, rendered.status_code, f'"{digest}"', as_of)


Renderer = Callable[[Key], Awaitable[Rendered]]


class CacheMetrics:
    def __init__(self, metrics: Metrics) -> None:
        self.renders = Counter(
            "stellwerk_status_renders_total",
            "Renderings of status pages and their JSON, by variant kind.",
            ["kind"],
            registry=metrics.registry,
        )
        # Counted by every cached read, on the event loop: a plain number (ops.loop_metrics).
        self.lookups = LoopCounter(
            "stellwerk_status_cache_lookups_total",
            "Public status page requests by what the cache had: fresh, stale, l2, miss, skeleton.",
            ["result"],
            metrics.registry,
        )
        self.fresh = self.lookups.labels("fresh")  # looked up once: every cached read counts
        self.errors = Counter(
            "stellwerk_status_cache_errors_total",
            "Failed calls to the status pages' L2 cache (Redis).",
            registry=metrics.registry,
        )


class L2:
    """Redis as the shared layer; every call fails soft: None or nothing, a warning the first
    time, a metric each time, and a pause before Redis is asked again."""

    _PUT = """
    local current = redis.call('HGET', KEYS[1], 'as_of')
    if current and tonumber(current) >= tonumber(ARGV[1]) then return 0 end
    redis.call('HSET', KEYS[1], 'as_of', ARGV[1], 'entry', ARGV[2])
    redis.call('EXPIRE', KEYS[1], ARGV[3])
    redis.call('SADD', KEYS[2], ARGV[4])
    redis.call('EXPIRE', KEYS[2], ARGV[3])
    return 1
    """

    def __init__(self, url: str, metrics: CacheMetrics) -> None:
        # No retries, whatever the redis-py version's default (some retry three times, backing
        # off for seconds): a failed call is answered from memory and rendering at once.
        self._client = aioredis.Redis.from_url(
            url,
            socket_timeout=L2_TIMEOUT,
            socket_connect_timeout=L2_TIMEOUT,
            retry=Retry(NoBackoff(), 0),
        )
        self._metrics = metrics
        self._paused_until = 0.0
        self._warned = False
        self.healthy = True  # the last call succeeded
        self._put = self._client.register_script(self._PUT)

    async def get(self, key: Key) -> Entry | None:
        raw = await self._call(self._client.hget(key.redis_key, "entry"))
        return msgspec.msgpack.decode(raw, type=Entry) if isinstance(raw, bytes) else None

    async def put(self, key: Key, entry: Entry) -> None:
        """Store `entry` unless L2 has one as new already."""
        await self._call(
            self._put(
                keys=[key.redis_key, index_key(key.tenant_id, key.page)],
                args=[entry.as_of, msgspec.msgpack.encode(entry), L2_TTL, key.member],
            )
        )

    async def keys(self, tenant_id: TenantId, page: str) -> list[Key]:
        members = await self._call(self._client.smembers(index_key(tenant_id, page)))
        if not isinstance(members, set):
            return []
        return [Key.of_member(tenant_id, page, m.decode()) for m in members]

    async def _call(self, call: Awaitable[object]) -> object:
        if time.monotonic() < self._paused_until:
            if asyncio.iscoroutine(call):
                call.close()
            self.healthy = False
            return None
        try:
            result = await call
        except (RedisError, OSError) as exc:
            self.healthy = False
            self._metrics.errors.inc()
            self._paused_until = time.monotonic() + L2_PAUSE
            if not self._warned:
                self._warned = True
                log.warning(
                    "status page cache: Redis is out of reach; serving from memory and rendering",
                    error=str(exc),
                )
            return None
        self.healthy = True
        if self._warned:
            self._warned = False
            log.info("status page cache: Redis answers again")
        return result

    async def close(self) -> None:
        await self._client.aclose()


@dataclass
class _PageState:
    """A page as this process's cache knows it: the last invalidation seen, its entries, and
    the coalescing of its refreshes."""

    seen: int
    keys: set[Key] = field(default_factory=set)
    pending_since: float | None = None
    last_change: float = 0.0
    last_render: float = float("-inf")
    task: asyncio.Task[None] | None = None

    def due(self) -> float:
        assert self.pending_since is not None
        return due(self.pending_since, self.last_change, self.last_render)


def due(pending_since: float, last_change: float, last_render: float) -> float:
    """When a page with changes pending since `pending_since` renders: at once if it is the
    first change after a quiet spell, else once changes pause for `QUIET`, at the latest
    `MAX_DELAY` after the first of them."""
    if pending_since - last_render >= QUIET:
        return pending_since
    return min(last_change + QUIET, pending_since + MAX_DELAY)


@dataclass
class _Tenant:
    position: int  # the internal bus's position this process has read up to
    task: asyncio.Task[None] | None = None


class PageCache:
    """One process's cache of public renderings, with its invalidation follower."""

    def __init__(
        self,
        platform: Platform,
        metrics: Metrics,
        *,
        redis_url: str | None = None,
        render_budget: float = RENDER_BUDGET,
        on_page_changed: Callable[[], None] | None = None,
    ) -> None:
        self._platform = platform
        self.metrics = CacheMetrics(metrics)
        self.l2 = L2(redis_url, self.metrics) if redis_url else None
        self.render_budget = render_budget
        self._on_page_changed = on_page_changed
        self._renderers: dict[str, Renderer] = {}
        self._l1: dict[Key, Entry] = {}
        self._pages: dict[tuple[TenantId, str], _PageState] = {}
        self._tenants: dict[TenantId, _Tenant] = {}
        self._following: dict[TenantId, asyncio.Future[int | None]] = {}
        self._resolved: dict[str, tuple[float, TenantId, Page]] = {}
        self._first: dict[Key, asyncio.Task[Entry]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def register(self, kind: str, renderer: Renderer) -> None:
        """How variants of `kind` are rendered (the page, its JSON, its feeds)."""
        self._renderers[kind] = renderer

    # Finding a page by its public name, without a query per request.

    async def find_page(
        self, name: str, lookup: Callable[[str], Awaitable[tuple[TenantId, Page]]]
    ) -> tuple[TenantId, Page]:
        found = self.known_page(name)
        if found is not None:
            return found
        tenant_id, page = await lookup(name)
        if await self._follow(tenant_id) is not None:
            self._resolved[name] = (time.monotonic(), tenant_id, page)
        return tenant_id, page

    def known_page(self, name: str) -> tuple[TenantId, Page] | None:
        """What `name` was found to be lately, if this process found it (no query)."""
        found = self._resolved.get(name)
        if found is None or time.monotonic() - found[0] >= RESOLVED_TTL:
            return None
        return found[1], found[2]

    # Reading.

    def fresh(self, key: Key) -> Entry | None:
        """The entry for `key` if L1 has it fresh (counted as `get` counts it), else None."""
        entry = self._l1.get(key)
        if entry is None:
            return None
        state = self._pages.get((key.tenant_id, key.page))
        if state is None or entry.as_of < state.seen:
            return None
        self.metrics.fresh.inc()
        return entry

    async def get(
        self,
        key: Key,
        *,
        skeleton: Callable[[], Rendered] | None = None,
        since: float | None = None,
    ) -> Entry:
        """The entry for `key`: fresh from L1 or L2, else stale (refreshed in the background),
        else rendered now; past the render budget, `skeleton()` (not cached) when given. The
        budget counts from `since` (`time.monotonic()` when the reader's request came; by
        default now), so finding the page and following its tenant's events come out of it."""
        since = time.monotonic() if since is None else since
        entry = self.fresh(key)
        if entry is not None:
            return entry
        entry = self._l1.get(key)
        position = await self._follow(key.tenant_id)
        if position is None:  # the tenant's events cannot be followed: nothing is kept
            self.metrics.lookups.labels("miss").inc()
            return Entry.of(await self.render(key), 0)
        state = self._state(key, position)
        if self.l2 is not None:
            shared = await self.l2.get(key)
            if shared is not None and (entry is None or shared.as_of > entry.as_of):
                entry = shared
                self._keep(key, entry, state)
                if entry.as_of >= state.seen:
                    self.metrics.lookups.labels("l2").inc()
                    return entry
        if entry is not None:
            self.metrics.lookups.labels("stale").inc()
            state.keys.add(key)
            if state.pending_since is None and state.task is None:
                # A reader is no change: it starts a refresh if none is under way, and never
                # holds one back (readers polling for a change would, as changes do).
                self.changed(key.tenant_id, key.page, state.seen, now=time.monotonic())
            return entry
        first = self._first.get(key)
        if first is None:
            first = asyncio.create_task(self._first_render(key, state))
            self._first[key] = first
            first.add_done_callback(lambda t: self._first_done(key, t))
        if skeleton is None:
            self.metrics.lookups.labels("miss").inc()
            return await asyncio.shield(first)
        left = since + self.render_budget - SKELETON_TIME - time.monotonic()
        try:
            found = await asyncio.wait_for(asyncio.shield(first), max(left, 0.0))
        except TimeoutError:
            self.metrics.lookups.labels("skeleton").inc()
            return Entry.of(skeleton(), -1)
        self.metrics.lookups.labels("miss").inc()
        return found

    async def _first_render(self, key: Key, state: _PageState) -> Entry:
        as_of = self._tenants[key.tenant_id].position
        entry = Entry.of(await self.render(key), as_of)
        if entry.status_code != 200:
            return entry  # an unknown incident, say: not kept, or anyone could fill the cache
        self._keep(key, entry, state)
        if self.l2 is not None:
            await self.l2.put(key, entry)
        return entry

    def _first_done(self, key: Key, task: asyncio.Task[Entry]) -> None:
        self._first.pop(key, None)
        if not task.cancelled() and task.exception() is not None:
            # A reader that got the skeleton is not waiting for it any more: say it here.
            log.error("rendering a status page failed", page=key.page, exc_info=task.exception())

    async def render(self, key: Key) -> Rendered:
        self.metrics.renders.labels(key.variant[0]).inc()
        return await self._renderers[key.variant[0]](key)

    def _keep(self, key: Key, entry: Entry, state: _PageState) -> None:
        if key not in self._l1 and len(self._l1) >= MAX_ENTRIES:
            oldest = next(iter(self._l1))
            del self._l1[oldest]
            self._pages.get((oldest.tenant_id, oldest.page), state).keys.discard(oldest)
        self._l1[key] = entry
        state.keys.add(key)

    def _state(self, key: Key, position: int) -> _PageState:
        state = self._pages.get((key.tenant_id, key.page))
        if state is None:
            state = self._pages[(key.tenant_id, key.page)] = _PageState(seen=position)
        return state

    # Invalidation.

    def changed(self, tenant_id: TenantId, page: str, position: int, *, now: float) -> None:
        """Page `page` changed at `position`: its entries are stale; refresh them."""
        state = self._pages.get((tenant_id, page))
        if state is None:
            return
        state.seen = max(state.seen, position)
        if not state.keys:
            return
        if state.pending_since is None:
            state.pending_since = now
        state.last_change = now
        if state.task is None:
            state.task = asyncio.create_task(self._refresh(tenant_id, page, state))

    def dropped(self, tenant_id: TenantId, page: str, position: int) -> None:
        """The page itself changed: forget all of it, and how its name was resolved."""
        state = self._pages.get((tenant_id, page))
        if state is not None:
            for key in state.keys:
                self._l1.pop(key, None)
            state.keys.clear()
            state.seen = max(state.seen, position)
        self._resolved.pop(page, None)
        if self._on_page_changed is not None:
            self._on_page_changed()

    async def _refresh(self, tenant_id: TenantId, page: str, state: _PageState) -> None:
        try:
            while state.pending_since is not None:
                wait = state.due() - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                state.pending_since = None
                if all(self._fresh(key, state) for key in state.keys):
                    continue  # a render under way when the change came covered it
                state.last_render = time.monotonic()
                await self._refresh_keys(tenant_id, state)
        except Exception:
            log.exception("refreshing a status page failed", page=page)
        finally:
            state.task = None

    def _fresh(self, key: Key, state: _PageState) -> bool:
        entry = self._l1.get(key)
        return entry is not None and entry.as_of >= state.seen

    async def _refresh_keys(self, tenant_id: TenantId, state: _PageState) -> None:
        target = state.seen
        keys = list(state.keys)
        if self.l2 is not None:
            keys = await self._from_l2(keys, state, target)
        for key in keys:
            as_of = self._tenants[tenant_id].position
            entry = Entry.of(await self.render(key), as_of)
            if key in state.keys:
                self._keep(key, entry, state)

    async def _from_l2(self, keys: list[Key], state: _PageState, target: int) -> list[Key]:
        """The keys the content updater has not refreshed in L2 within `L2_GRACE`; those it
        has are taken into L1."""
        assert self.l2 is not None
        deadline = time.monotonic() + L2_GRACE
        left = keys
        while left:
            missing = []
            for key in left:
                shared = await self.l2.get(key)
                if shared is not None and shared.as_of >= target:
                    self._keep(key, shared, state)
                else:
                    missing.append(key)
            left = missing
            if not left or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)
        return left

    # Following the tenants' internal buses.

    async def _follow(self, tenant_id: TenantId) -> int | None:
        """Follow the tenant's invalidation events (once); the position followed from, or None
        when they cannot be followed (its internal bus does not exist yet)."""
        known = self._tenants.get(tenant_id)
        if known is not None:
            return known.position
        started = self._following.get(tenant_id)
        if started is None:
            started = asyncio.get_running_loop().create_future()
            self._following[tenant_id] = started
            task = asyncio.create_task(self._follow_tenant(tenant_id, started))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:
            position = await asyncio.shield(started)
        except Exception:
            self._following.pop(tenant_id, None)
            raise
        if position is None:
            self._following.pop(tenant_id, None)
        return position

    async def _follow_tenant(
        self, tenant_id: TenantId, started: asyncio.Future[int | None]
    ) -> None:
        tail = self._platform.tail
        try:
            principal = await self._platform.tenants.acting(tenant_id, ACTOR)
            after, pattern = await tail.open(principal, INTERNAL_BUS, _CHANGED_PATTERN, None)
        except NotFound:
            started.set_result(None)
            return
        except BaseException as exc:
            if not started.done():
                started.set_exception(exc)
            raise
        tenant = self._tenants[tenant_id] = _Tenant(after)
        started.set_result(after)
        try:
            async for event in tail.follow(principal, INTERNAL_BUS, after, pattern, keepalive=30):
                if event is None:
                    continue
                data = msgspec.json.decode(event.body).get("data") or {}
                page = data.get("page")
                tenant.position = event.position
                if not isinstance(page, str):
                    continue
                if data.get("kind") == "page":
                    self.dropped(tenant_id, page, event.position)
                else:
                    self.changed(tenant_id, page, event.position, now=time.monotonic())
        except NotFound:
            pass  # the bus was deleted: follow again when it is used next
        finally:
            self._tenants.pop(tenant_id, None)
            self._following.pop(tenant_id, None)

    async def close(self) -> None:
        tasks: list[asyncio.Task[Any]] = [*self._tasks, *self._first.values()]
        tasks += [s.task for s in self._pages.values() if s.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.l2 is not None:
            with contextlib.suppress(Exception):
                await self.l2.close()


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether If-None-Match names `etag` (weak comparison, as RFC 9110 asks for GET)."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    tags = (t.strip() for t in if_none_match.split(","))
    return etag in (t.removeprefix("W/") for t in tags)

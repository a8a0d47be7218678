"""Synthetic checks: HTTP probes that the scheduler runs on an interval, whose results are
events and whose failures and recoveries set a linked component's status.

A check is tenant-scoped and named (`PUT /v1/checks/{name}`). One process across the
deployment runs all checks (`CapabilityContext.singleton`), each at its interval with jitter, so
a check never runs twice at once and another process takes over when that one dies. Each result
is stored (the latency chart) and published as `status.check.completed`; a check is `down`
after `failures_to_open` consecutive failures, `degraded` while it answers slower than its
threshold, `up` otherwise, and each change of that state sets the linked component's status
(`major_outage`, `degraded_performance`, `operational`) and is published as
`status.check.changed`. `on_down`/`on_up` let incidents follow (incidents.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import random
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Final

import aiohttp
import structlog

from stellwerk.auth import Principal
from stellwerk.capability import Outgoing, UnsafeUrl
from stellwerk.clock import utc_now
from stellwerk.events import CloudEvent
from stellwerk.refs import TenantId
from stellwerk.service import NotFound, Tenants, ValidationFailed
from stellwerk.statuspages import events
from stellwerk.statuspages.check_store import (
    Check,
    CheckInput,
    CheckResult,
    CheckState,
    CheckStore,
    Due,
)
from stellwerk.statuspages.events import Publisher
from stellwerk.statuspages.model import ComponentStatus
from stellwerk.statuspages.service import StatusPages

log = structlog.get_logger("stellwerk.statuspages")

CHECK_COMPLETED: Final = "status.check.completed"
CHECK_CHANGED: Final = "status.check.changed"
# How often the runner looks for checks added, changed or deleted by any process.
RELOAD_SECONDS: Final = 5.0
# How much of the interval a run may move either way, so that checks saved together spread out.
JITTER: Final = 0.1
RESULTS_KEPT: Final = timedelta(days=90)
TRIM_SECONDS: Final = 3600.0
MAX_BODY_READ: Final = 1 << 20  # what `expect_body` is looked for in
# A linked page is invalidated at most this often by its checks' results, so its latency chart
# (and today's uptime bar) moves on without a render for every result.
LATENCY_REFRESH_SECONDS: Final = 300.0


_COMPONENT_STATUS: dict[CheckState, ComponentStatus] = {
    CheckState.UP: ComponentStatus.OPERATIONAL,
    CheckState.DEGRADED: ComponentStatus.DEGRADED_PERFORMANCE,
    CheckState.DOWN: ComponentStatus.MAJOR_OUTAGE,
}


async def probe(
    session: aiohttp.ClientSession, check: Check, now: Callable[[], datetime]
) -> CheckResult:
    """Run a check once: a result, never an exception (a failure is a result too)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    at = now()
    status: int | None = None
    try:
        async with asyncio.timeout(check.timeout_seconds):
            async with session.request(
                check.method, check.url, allow_redirects=True, headers={"Accept": "*/*"}
            ) as response:
                status = response.status
                body = b""
                if check.expect_body is not None:
                    body = await response.content.read(MAX_BODY_READ)
                else:
                    await response.read()
        latency = (loop.time() - started) * 1000
    except TimeoutError:
        latency = (loop.time() - started) * 1000
        return CheckResult(
            at, False, latency, status, f"timed out after {check.timeout_seconds:g} s"
        )
    except (aiohttp.ClientError, OSError) as exc:
        latency = (loop.time() - started) * 1000
        return CheckResult(at, False, latency, None, f"{type(exc).__name__}: {exc}"[:500])
    if check.expect_status:
        passed = status in check.expect_status
        reason = f"status {status}, expected one of {check.expect_status}"
    else:
        passed = 200 <= status < 400
        reason = f"status {status}, expected 2xx or 3xx"
    if not passed:
        return CheckResult(at, False, latency, status, reason)
    if check.expect_body is not None and check.expect_body.encode() not in body:
        return CheckResult(
            at, False, latency, status, f"the body does not contain {check.expect_body!r}"
        )
    return CheckResult(at, True, latency, status, None)


StateHook = Callable[[Principal, Check, CheckResult], Awaitable[None]]


class Checks:
    """The checks' use cases (the admin API) and their runner (the scheduler's duty)."""

    def __init__(
        self,
        store: CheckStore,
        pages: StatusPages,
        publisher: Publisher,
        tenants: Tenants,
        outgoing: Outgoing,
        *,
        clock: Callable[[], datetime] = utc_now,
        reload_seconds: float = RELOAD_SECONDS,
    ) -> None:
        self.store = store
        self._pages = pages
        self._publisher = publisher
        self._tenants = tenants
        self._outgoing = outgoing
        self._clock = clock
        self._reload_seconds = reload_seconds
        self._changed = asyncio.Event()
        self._page_refreshed: dict[tuple[TenantId, str], float] = {}  # monotonic times
        self.on_down: list[StateHook] = []
        self.on_up: list[StateHook] = []

    # The admin API.

    async def put(self, principal: Principal, name: str, spec: CheckInput) -> tuple[Check, bool]:
        try:
            self._outgoing.check_url(spec.url)
        except UnsafeUrl as exc:
            raise ValidationFailed(str(exc), field="$.url", code="UnsafeUrl") from None
        if (spec.page is None) != (spec.component is None):
            raise ValidationFailed(
                "page and component go together: name both, or neither", field="$.component"
            )
        if spec.page is not None and spec.component is not None:
            await self._pages.get_component(principal, spec.page, spec.component)
        check, created = await self.store.put(principal.tenant_id, name, spec, self._clock())
        self._changed.set()
        return check, created

    async def get(self, principal: Principal, name: str) -> Check:
        check = await self.store.get(principal.tenant_id, name)
        if check is None:
            raise NotFound.of(f"check {name!r}")
        return check

    async def all(self, principal: Principal) -> list[Check]:
        return await self.store.all(principal.tenant_id)

    async def delete(self, principal: Principal, name: str) -> None:
        if not await self.store.delete(principal.tenant_id, name):
            raise NotFound.of(f"check {name!r}")
        self._changed.set()

    async def results(
        self, principal: Principal, name: str, since: datetime, limit: int
    ) -> list[CheckResult]:
        await self.get(principal, name)
        return await self.store.results(principal.tenant_id, name, since, limit)

    # The runner.

    async def run(self) -> None:
        """Run every enabled check at its interval, until cancelled (one process at a time)."""
        session = self._outgoing.session()
        schedule: list[tuple[float, int, Due]] = []
        known: dict[tuple[TenantId, str], datetime] = {}  # the version each check runs at
        running: set[asyncio.Task[None]] = set()
        loop = asyncio.get_running_loop()
        order = 0
        next_reload = 0.0
        next_trim = loop.time() + TRIM_SECONDS
        try:
            while True:
                now = loop.time()
                if now >= next_trim:
                    next_trim = now + TRIM_SECONDS
                    await self.trim()
                if now >= next_reload or self._changed.is_set():
                    self._changed.clear()
                    next_reload = now + self._reload_seconds
                    current = {(d.tenant_id, d.check.name): d for d in await self.store.enabled()}
                    schedule = [s for s in schedule if _current(s[2], current)]
                    heapq.heapify(schedule)
                    for key, due in current.items():
                        if known.get(key) != due.check.updated_at:
                            # New or changed: first run within its interval, spread out.
                            first = now + random.uniform(0, min(due.check.interval_seconds, 5.0))
                            schedule = [
                                s for s in schedule if (s[2].tenant_id, s[2].check.name) != key
                            ]
                            heapq.heapify(schedule)
                            order += 1
                            heapq.heappush(schedule, (first, order, due))
                    known = {key: due.check.updated_at for key, due in current.items()}
                while schedule and schedule[0][0] <= now:
                    _, _, due = heapq.heappop(schedule)
                    task = asyncio.create_task(self._run_one(session, due))
                    running.add(task)
                    task.add_done_callback(running.discard)
                    interval = due.check.interval_seconds
                    order += 1
                    heapq.heappush(
                        schedule,
                        (now + interval * random.uniform(1 - JITTER, 1 + JITTER), order, due),
                    )
                wake = min(schedule[0][0] if schedule else next_reload, next_reload)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, wake - loop.time())):
                        await self._changed.wait()
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    async def _run_one(self, session: aiohttp.ClientSession, due: Due) -> None:
        check = due.check
        try:
            result = await probe(session, check, self._clock)
            moved = await self.store.record(due.tenant_id, check, result)
            if moved is None:
                return
            before, after, failures = moved
            principal = await self._tenants.acting(due.tenant_id, "stellwerk:checks")
            published = [_completed(check, result, after, failures)]
            if after is not before:
                published.append(_changed(check, before, after, result))
            if result.ok and check.page is not None and self._refresh_due(due.tenant_id, check):
                published.append(events.changed(check.page, "latency", check.name, result.at))
            await self._publisher.publish(principal, published)
            if after is before or after is CheckState.UNKNOWN:
                return
            # The incident first: resolving one sets its components back to operational, and
            # the check's own status for the component (degraded, say) must come after.
            if after is CheckState.DOWN:
                hooks = self.on_down
            elif before is CheckState.DOWN:
                hooks = self.on_up
            else:
                hooks = []
            for hook in hooks:
                await hook(principal, check, result)
            if check.page is not None and check.component is not None:
                try:
                    await self._pages.set_component_status(
                        principal, check.page, [(check.component, _COMPONENT_STATUS[after])]
                    )
                except NotFound:
                    log.warning(
                        "check's component is gone",
                        check_name=check.name,
                        page=check.page,
                        component=check.component,
                    )
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("running a check failed", check=check.name)

    async def trim(self) -> None:
        await self.store.trim(self._clock() - RESULTS_KEPT)

    def _refresh_due(self, tenant_id: TenantId, check: Check) -> bool:
        """Whether the linked page is due an invalidation for its latency chart (the first
        result after a start always is)."""
        assert check.page is not None
        key, now = (tenant_id, check.page), asyncio.get_running_loop().time()
        last = self._page_refreshed.get(key)
        if last is not None and now - last < LATENCY_REFRESH_SECONDS:
            return False
        self._page_refreshed[key] = now
        return True


def _current(entry: Due, current: dict[tuple[TenantId, str], Due]) -> bool:
    found = current.get((entry.tenant_id, entry.check.name))
    return found is not None and found.check.updated_at == entry.check.updated_at


def _completed(check: Check, result: CheckResult, state: CheckState, failures: int) -> CloudEvent:
    return events.check_event(
        CHECK_COMPLETED,
        check.name,
        {
            "check": check.name,
            "url": check.url,
            "ok": result.ok,
            "state": str(state),
            "latency_ms": round(result.latency_ms, 3),
            "status_code": result.status_code,
            "error": result.error,
            "consecutive_failures": failures,
            "page": check.page,
            "component": check.component,
        },
        result.at,
    )


def _changed(
    check: Check, before: CheckState, after: CheckState, result: CheckResult
) -> CloudEvent:
    return events.check_event(
        CHECK_CHANGED,
        check.name,
        {
            "check": check.name,
            "old_state": str(before),
            "new_state": str(after),
            "error": result.error,
            "page": check.page,
            "component": check.component,
        },
        result.at,
    )

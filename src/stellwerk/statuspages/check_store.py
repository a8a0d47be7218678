"""Where synthetic checks are kept: their specs and state (`sp_checks`), every result
(`sp_check_results`, 90 days) and the latency chart's quarter-hour sums of passing results
(`sp_check_latency`), on SQLAlchemy Core over SQLite or PostgreSQL. `checks.py` runs them.

A result moves its check's state in the transaction that stores it, guarded by the version of
the check it ran (`updated_at`), so a result of a check changed meanwhile is dropped.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Final, Literal

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from stellwerk.clock import from_us, to_us
from stellwerk.refs import TenantId
from stellwerk.service import Conflict
from stellwerk.statuspages.latency import HourSum
from stellwerk.statuspages.model import Name
from stellwerk.statuspages.tables import check_latency, check_results, checks
from stellwerk.urls import PublicUrl

MAX_CHECKS_PER_TENANT: Final = 500
QUARTER_US: Final = 900_000_000  # the latency sums' bucket
HOUR_US: Final = 3_600_000_000


class CheckState(enum.StrEnum):
    UNKNOWN = "unknown"  # not run yet
    UP = "up"
    DEGRADED = "degraded"  # answers, slower than its threshold
    DOWN = "down"  # failed `failures_to_open` times in a row


class CheckInput(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # The URLs the SSRF guard takes, as the document shows them (`stellwerk.urls`).
    url: Annotated[PublicUrl, msgspec.Meta(max_length=2_000)]
    method: Literal["GET", "HEAD", "POST"] = "GET"
    interval_seconds: Annotated[float, msgspec.Meta(ge=1, le=86_400)] = 60.0
    timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=60)] = 10.0
    # Statuses that pass; none listed: any 2xx or 3xx.
    expect_status: list[Annotated[int, msgspec.Meta(ge=100, le=599)]] = msgspec.field(
        default_factory=list
    )
    # Text the body must contain (the first MiB of it).
    expect_body: Annotated[str, msgspec.Meta(min_length=1, max_length=1_000)] | None = None
    # Slower than this (but passing) is `degraded`.
    latency_threshold_ms: Annotated[int, msgspec.Meta(ge=1)] | None = None
    failures_to_open: Annotated[int, msgspec.Meta(ge=1, le=100)] = 3
    # The component the check's state drives, if any: both or neither.
    page: Name | None = None
    component: Name | None = None
    enabled: bool = True


class Check(msgspec.Struct, frozen=True):
    name: str
    url: str
    method: str
    interval_seconds: float
    timeout_seconds: float
    expect_status: list[int]
    expect_body: str | None
    latency_threshold_ms: int | None
    failures_to_open: int
    page: str | None
    component: str | None
    enabled: bool
    state: CheckState
    consecutive_failures: int
    last_run_at: datetime | None
    last_latency_ms: float | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime


class CheckResult(msgspec.Struct, frozen=True):
    at: datetime
    ok: bool
    latency_ms: float
    status_code: int | None
    error: str | None


@dataclass(frozen=True, slots=True)
class Due:
    """A check as the runner holds it."""

    tenant_id: TenantId
    check: Check


class CheckStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def put(
        self, tenant_id: TenantId, name: str, spec: CheckInput, now: datetime
    ) -> tuple[Check, bool]:
        at = to_us(now)
        values = {
            "url": spec.url,
            "method": spec.method,
            "interval_seconds": spec.interval_seconds,
            "timeout_seconds": spec.timeout_seconds,
            "expect_status": list(spec.expect_status),
            "expect_body": spec.expect_body,
            "latency_threshold_ms": spec.latency_threshold_ms,
            "failures_to_open": spec.failures_to_open,
            "page": spec.page,
            "component": spec.component,
            "enabled": spec.enabled,
            "updated_at": at,
        }
        key = (checks.c.tenant_id == tenant_id) & (checks.c.name == name)
        async with self._engine.begin() as conn:
            found = (await conn.execute(sa.select(checks.c.created_at).where(key))).first()
            if found is None:
                count = (
                    await conn.execute(
                        sa.select(sa.func.count()).where(checks.c.tenant_id == tenant_id)
                    )
                ).scalar_one()
                if count >= MAX_CHECKS_PER_TENANT:
                    raise Conflict(
                        f"the tenant has {count} checks, the most it may have",
                        code="LimitExceeded",
                    )
                await conn.execute(
                    checks.insert().values(
                        tenant_id=tenant_id,
                        name=name,
                        state=str(CheckState.UNKNOWN),
                        consecutive_failures=0,
                        created_at=at,
                        **values,
                    )
                )
            else:
                # A changed check starts over: its old state said nothing about the new probe.
                await conn.execute(
                    checks.update()
                    .where(key)
                    .values(state=str(CheckState.UNKNOWN), consecutive_failures=0, **values)
                )
            row = (await conn.execute(sa.select(checks).where(key))).one()
        return _check(row), found is None

    async def get(self, tenant_id: TenantId, name: str) -> Check | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(checks).where(
                        (checks.c.tenant_id == tenant_id) & (checks.c.name == name)
                    )
                )
            ).first()
        return _check(row) if row is not None else None

    async def all(self, tenant_id: TenantId) -> list[Check]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                sa.select(checks).where(checks.c.tenant_id == tenant_id).order_by(checks.c.name)
            )
            return [_check(row) for row in rows]

    async def enabled(self) -> list[Due]:
        """Every tenant's enabled checks (the runner's)."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(sa.select(checks).where(checks.c.enabled == sa.true()))
            return [Due(TenantId(row.tenant_id), _check(row)) for row in rows]

    async def delete(self, tenant_id: TenantId, name: str) -> bool:
        async with self._engine.begin() as conn:
            gone = await conn.execute(
                checks.delete().where((checks.c.tenant_id == tenant_id) & (checks.c.name == name))
            )
            for table in (check_results, check_latency):
                await conn.execute(
                    table.delete().where(
                        (table.c.tenant_id == tenant_id) & (table.c.check_name == name)
                    )
                )
        return bool(gone.rowcount)

    async def record(
        self, tenant_id: TenantId, check: Check, result: CheckResult
    ) -> tuple[CheckState, CheckState, int] | None:
        """Store a result and move the check's state on: (before, after, consecutive failures);
        None if the check was changed or deleted meanwhile (the result is dropped)."""
        failures = 0 if result.ok else check.consecutive_failures + 1
        key = (
            (checks.c.tenant_id == tenant_id)
            & (checks.c.name == check.name)
            & (checks.c.updated_at == to_us(check.updated_at))
        )
        async with self._engine.begin() as conn:
            row = (
                await conn.execute(
                    sa.select(checks.c.state, checks.c.consecutive_failures).where(key)
                )
            ).first()
            if row is None:
                return None
            before = CheckState(row.state)
            failures = 0 if result.ok else row.consecutive_failures + 1
            after = _next_state(before, check, result, failures)
            await conn.execute(
                checks.update()
                .where(key)
                .values(
                    state=str(after),
                    consecutive_failures=failures,
                    last_run_at=to_us(result.at),
                    last_latency_ms=result.latency_ms,
                    last_error=result.error,
                )
            )
            await conn.execute(
                check_results.insert().values(
                    tenant_id=tenant_id,
                    check_name=check.name,
                    at=to_us(result.at),
                    ok=result.ok,
                    latency_ms=result.latency_ms,
                    status_code=result.status_code,
                    error=result.error,
                )
            )
            if result.ok:
                await _add_latency(conn, tenant_id, check.name, result)
        return before, after, failures

    async def results(
        self, tenant_id: TenantId, name: str, since: datetime, limit: int
    ) -> list[CheckResult]:
        """A check's results from `since` on, newest first (the latency chart)."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                sa.select(check_results)
                .where(
                    (check_results.c.tenant_id == tenant_id)
                    & (check_results.c.check_name == name)
                    & (check_results.c.at >= to_us(since))
                )
                .order_by(check_results.c.at.desc())
                .limit(limit)
            )
            return [
                CheckResult(from_us(r.at), r.ok, r.latency_ms, r.status_code, r.error) for r in rows
            ]

    async def hourly_latency(
        self, tenant_id: TenantId, page: str, since: datetime, shift: timedelta
    ) -> dict[str, tuple[str, list[HourSum]]]:
        """For each component of `page` with a linked check (the first by name when several
        are), that check and its passing results from `since` on, summed per hour; the hours
        start `shift` past the UTC hour."""
        async with self._engine.connect() as conn:
            linked = await conn.execute(
                sa.select(checks.c.component, checks.c.name)
                .where(
                    (checks.c.tenant_id == tenant_id)
                    & (checks.c.page == page)
                    & checks.c.component.is_not(None)
                )
                .order_by(checks.c.name)
            )
            chosen: dict[str, str] = {}
            for link in linked:
                chosen.setdefault(link.component, link.name)
            if not chosen:
                return {}
            offset = int(shift.total_seconds() * 1_000_000)
            hour = ((check_latency.c.bucket - offset) // HOUR_US).label("hour")
            rows = await conn.execute(
                sa.select(
                    check_latency.c.check_name,
                    hour,
                    sa.func.sum(check_latency.c.count).label("results"),
                    sa.func.sum(check_latency.c.total_ms).label("total_ms"),
                    sa.func.max(check_latency.c.max_ms).label("max_ms"),
                )
                .where(
                    (check_latency.c.tenant_id == tenant_id)
                    & check_latency.c.check_name.in_(sorted(set(chosen.values())))
                    & (check_latency.c.bucket >= to_us(since))
                )
                .group_by(check_latency.c.check_name, hour)
            )
            hours: dict[str, list[HourSum]] = {}
            for summed in rows:
                start = from_us(int(summed.hour) * HOUR_US + offset)
                hours.setdefault(summed.check_name, []).append(
                    HourSum(
                        start, int(summed.results), float(summed.total_ms), float(summed.max_ms)
                    )
                )
        return {c: (name, hours.get(name, [])) for c, name in chosen.items()}

    async def trim(self, before: datetime) -> int:
        async with self._engine.begin() as conn:
            gone = await conn.execute(
                check_results.delete().where(check_results.c.at < to_us(before))
            )
            await conn.execute(
                check_latency.delete().where(check_latency.c.bucket < to_us(before) - HOUR_US)
            )
        return int(gone.rowcount)


async def _add_latency(
    conn: AsyncConnection, tenant_id: TenantId, name: str, result: CheckResult
) -> None:
    """Add a passing result to its quarter hour's sums (an upsert, in the result's
    transaction: a result counts in the chart exactly when it is kept)."""
    bucket = to_us(result.at) // QUARTER_US * QUARTER_US
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = insert(check_latency).values(
        tenant_id=tenant_id,
        check_name=name,
        bucket=bucket,
        count=1,
        total_ms=result.latency_ms,
        max_ms=result.latency_ms,
    )
    await conn.execute(
        statement.on_conflict_do_update(
            index_elements=["tenant_id", "check_name", "bucket"],
            set_={
                "count": check_latency.c.count + 1,
                "total_ms": check_latency.c.total_ms + statement.excluded.total_ms,
                "max_ms": sa.case(
                    (statement.excluded.max_ms > check_latency.c.max_ms, statement.excluded.max_ms),
                    else_=check_latency.c.max_ms,
                ),
            },
        )
    )


def _next_state(before: CheckState, check: Check, result: CheckResult, failures: int) -> CheckState:
    if not result.ok:
        # Down only after enough failures in a row; until then it keeps what it was.
        if failures >= check.failures_to_open:
            return CheckState.DOWN
        return before if before is not CheckState.UNKNOWN else CheckState.UP
    if check.latency_threshold_ms is not None and result.latency_ms > check.latency_threshold_ms:
        return CheckState.DEGRADED
    return CheckState.UP


def _check(row: Any) -> Check:
    return Check(
        name=row.name,
        url=row.url,
        method=row.method,
        interval_seconds=row.interval_seconds,
        timeout_seconds=row.timeout_seconds,
        expect_status=list(row.expect_status),
        expect_body=row.expect_body,
        latency_threshold_ms=row.latency_threshold_ms,
        failures_to_open=row.failures_to_open,
        page=row.page,
        component=row.component,
        enabled=row.enabled,
        state=CheckState(row.state),
        consecutive_failures=row.consecutive_failures,
        last_run_at=from_us(row.last_run_at) if row.last_run_at is not None else None,
        last_latency_ms=row.last_latency_ms,
        last_error=row.last_error,
        created_at=from_us(row.created_at),
        updated_at=from_us(row.updated_at),
    )

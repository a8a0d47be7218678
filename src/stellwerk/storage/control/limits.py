"""Per-tenant quotas in the control plane: rates and counts the operator sets for one tenant.

A limit left unset (None) means the server-wide default (`--tenant-event-rate`,
`--max-buses-per-tenant`, ...). Writing announces a `limits` change, so servers that hear it
forget what they cached at once; others (a CLI beside them) are picked up within the cache's
time to live.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from stellwerk.refs import TenantId
from stellwerk.seams import Change
from stellwerk.storage.control.changes import ChangeFeed
from stellwerk.storage.control.tables import tenant_limits


@dataclass(frozen=True, slots=True)
class TenantLimits:
    """A tenant's own limits; None: the server's default applies."""

    events_per_second: float | None = None
    requests_per_second: float | None = None
    buses: int | None = None
    rules: int | None = None  # per bus, as the server's `--max-rules-per-bus`
    target_invocations_per_second: float | None = None

    def is_empty(self) -> bool:
        return all(getattr(self, f) is None for f in LIMIT_FIELDS)


LIMIT_FIELDS: Final = tuple(f.name for f in dataclasses.fields(TenantLimits))
NO_LIMITS: Final = TenantLimits()


def _limits(row: sa.Row[Any] | None) -> TenantLimits:
    if row is None:
        return NO_LIMITS
    return TenantLimits(**{f: getattr(row, f) for f in LIMIT_FIELDS})


async def tenant_limit(conn: AsyncConnection, tenant_id: TenantId, name: str) -> Any:
    """Inside a transaction that enforces a count: the tenant's own limit `name`, or None."""
    return await conn.scalar(
        sa.select(tenant_limits.c[name]).where(tenant_limits.c.tenant_id == tenant_id)
    )


class LimitStore:
    def __init__(self, changes: ChangeFeed, now: Callable[[], datetime]) -> None:
        self._changes = changes
        self._engine = changes.engine
        self._now = now

    async def get(self, tenant_id: TenantId) -> TenantLimits:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    tenant_limits.select().where(tenant_limits.c.tenant_id == tenant_id)
                )
            ).first()
        return _limits(row)

    async def update(self, tenant_id: TenantId, values: Mapping[str, Any]) -> TenantLimits:
        """Set the limits in `values` (a None clears one), leave the others: the limits now.
        A tenant left without any limit of its own loses its row."""
        unknown = set(values) - set(LIMIT_FIELDS)
        if unknown:
            raise ValueError(f"unknown limits: {', '.join(sorted(unknown))}")
        where = tenant_limits.c.tenant_id == tenant_id
        async with self._changes.begin() as conn:
            row = (await conn.execute(tenant_limits.select().where(where))).first()
            limits = dataclasses.replace(_limits(row), **values)
            columns = dataclasses.asdict(limits)
            if limits.is_empty():
                await conn.execute(tenant_limits.delete().where(where))
            elif row is None:
                await conn.execute(
                    tenant_limits.insert().values(
                        tenant_id=tenant_id, updated_at=self._now(), **columns
                    )
                )
            else:
                await conn.execute(
                    tenant_limits.update().where(where).values(updated_at=self._now(), **columns)
                )
            self._changes.changed(Change.of("limits", tenant_id))
        return limits

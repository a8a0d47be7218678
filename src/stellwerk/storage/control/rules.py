"""Rules of a tenant's buses. Target signing secrets are stored encrypted, bound to their row."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
import sqlalchemy as sa

from stellwerk.clock import as_utc
from stellwerk.refs import BusRef, TenantId, TenantName, TenantRef
from stellwerk.rules import Rule, RuleInput, TargetSpec
from stellwerk.seams import Change
from stellwerk.storage.control.limits import tenant_limit
from stellwerk.storage.control.records import ConflictError, SealedStore
from stellwerk.storage.control.tables import rules, tenants


@dataclass(frozen=True, slots=True)
class ScheduledRule:
    tenant: TenantRef
    bus: str
    name: str
    schedule: str
    created_at: datetime


_targets_decoder = msgspec.json.Decoder(list[TargetSpec])


# A rotation's previous secret is sealed apart from the current one: neither reads as the other.
_PREVIOUS = "#previous"


def _row(tenant_id: TenantId, bus: str, rule: str, target_id: str) -> str:
    # Binds a sealed secret to its target: copied into another row, it does not decrypt.
    return f"rule:{tenant_id}/{bus}/{rule}/{target_id}"


def _sealed(target: TargetSpec, row: str, seal: Callable[[str, str], str]) -> TargetSpec:
    """`target` with its signing secrets passed through `seal(value, associated_data)`."""
    if target.secret:
        target = msgspec.structs.replace(target, secret=seal(target.secret, row))
    if target.previous_secret:
        previous = seal(target.previous_secret, row + _PREVIOUS)
        target = msgspec.structs.replace(target, previous_secret=previous)
    return target


class RuleStore(SealedStore):
    def _encode_targets(
        self, tenant_id: TenantId, bus: str, name: str, targets: list[TargetSpec]
    ) -> str:
        sealed = [
            _sealed(t, _row(tenant_id, bus, name, t.id), lambda v, r: self._secrets().encrypt(v, r))
            for t in targets
        ]
        return msgspec.json.encode(sealed).decode()

    def _rule(self, row: sa.Row[Any]) -> Rule:
        targets = [
            _sealed(
                t,
                _row(row.tenant_id, row.bus, row.name, t.id),
                lambda v, r: self._secrets().decrypt(v, r),
            )
            for t in _targets_decoder.decode(row.targets)
        ]
        return Rule(
            name=row.name,
            bus=row.bus,
            pattern=msgspec.json.decode(row.pattern),
            state=row.state,
            targets=targets,
            description=row.description,
            created_at=as_utc(row.created_at),
            updated_at=as_utc(row.updated_at),
            view=row.view,
            schedule=row.schedule,
            sites="all" if row.sites == "all" else "active",
        )

    async def put(
        self,
        tenant_id: TenantId,
        bus: str,
        name: str,
        body: RuleInput,
        *,
        max_rules: int,
        log_end: int | None = None,
    ) -> tuple[Rule, bool]:
        """Create or replace a rule; returns it and whether it was created.

        `log_end` is where the bus's log ended before this save (None: not known). A rule that
        becomes enabled keeps it as `enabled_from`: the router routes every event after it
        through the rule (`routed_rules`). A rule enabled before keeps its own."""
        now = self._now()
        where = sa.and_(rules.c.tenant_id == tenant_id, rules.c.bus == bus, rules.c.name == name)
        values: dict[str, Any] = {
            "pattern": msgspec.json.encode(body.pattern).decode(),
            "state": body.state,
            "targets": self._encode_targets(tenant_id, bus, name, body.targets),
            "description": body.description,
            "view": body.view,
            "schedule": body.schedule,
            "sites": body.sites,
            "updated_at": now,
        }
        async with self._changes.begin() as conn:
            existing = (
                await conn.execute(sa.select(rules.c.state, rules.c.enabled_from).where(where))
            ).first()
            if body.state != "enabled":
                values["enabled_from"] = None
            elif existing is None or existing.state != "enabled":
                values["enabled_from"] = log_end
            if existing is None:
                count = await conn.scalar(
                    sa.select(sa.func.count())
                    .select_from(rules)
                    .where(rules.c.tenant_id == tenant_id, rules.c.bus == bus)
                )
                own = await tenant_limit(conn, tenant_id, "rules")
                limit = max_rules if own is None else own
                if (count or 0) >= limit:
                    raise ConflictError(
                        f"the bus already has {count} rules (limit {limit}"
                        + (", the tenant's quota)" if own is not None else ")")
                    )
                await conn.execute(
                    rules.insert().values(
                        tenant_id=tenant_id, bus=bus, name=name, created_at=now, **values
                    )
                )
            else:
                await conn.execute(rules.update().where(where).values(**values))
            row = (await conn.execute(rules.select().where(where))).one()
            self._changes.changed(Change.of("rules", tenant_id, bus))
        return self._rule(row), existing is None

    async def get(self, tenant_id: TenantId, bus: str, name: str) -> Rule | None:
        where = sa.and_(rules.c.tenant_id == tenant_id, rules.c.bus == bus, rules.c.name == name)
        async with self._engine.connect() as conn:
            row = (await conn.execute(rules.select().where(where))).first()
        return self._rule(row) if row else None

    async def _bus_rows(self, tenant_id: TenantId, bus: str) -> list[sa.Row[Any]]:
        query = (
            rules.select()
            .where(rules.c.tenant_id == tenant_id, rules.c.bus == bus)
            .order_by(rules.c.name)
        )
        async with self._engine.connect() as conn:
            return list((await conn.execute(query)).all())

    async def for_bus(self, tenant_id: TenantId, bus: str) -> list[Rule]:
        return [self._rule(r) for r in await self._bus_rows(tenant_id, bus)]

    async def routed_rules(self, tenant_id: TenantId, bus: str) -> tuple[list[Rule], int]:
        """The bus's rules (as `for_bus`), and the log position after which its enabled rules
        route every event: the earliest at which one of them was enabled (0: not known, or no
        enabled rule). Read together, so that the position is that of these rules."""
        rows = await self._bus_rows(tenant_id, bus)
        enabled = [r.enabled_from or 0 for r in rows if r.state == "enabled"]
        return [self._rule(r) for r in rows], min(enabled, default=0)

    async def any_enabled(self, bus: BusRef) -> bool:
        """Whether the bus has an enabled rule now: a router asks before it passes over a bus
        whose rules it has not taken in yet."""
        query = (
            sa.select(rules.c.name)
            .join(tenants, tenants.c.id == rules.c.tenant_id)
            .where(tenants.c.name == bus.tenant, rules.c.bus == bus.bus, rules.c.state == "enabled")
            .limit(1)
        )
        async with self._engine.connect() as conn:
            return (await conn.execute(query)).first() is not None

    async def scheduled(self) -> list[ScheduledRule]:
        """Every enabled scheduled rule of every tenant (the scheduler's list of work)."""
        query = (
            sa.select(
                rules.c.tenant_id,
                tenants.c.name.label("tenant_name"),
                rules.c.bus,
                rules.c.name,
                rules.c.schedule,
                rules.c.created_at,
            )
            .join(tenants, tenants.c.id == rules.c.tenant_id)
            .where(rules.c.schedule.is_not(None), rules.c.state == "enabled")
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            ScheduledRule(
                TenantRef(TenantId(r.tenant_id), TenantName(r.tenant_name)),
                r.bus,
                r.name,
                r.schedule,
                as_utc(r.created_at),
            )
            for r in rows
        ]

    async def delete(self, tenant_id: TenantId, bus: str, name: str) -> bool:
        where = sa.and_(rules.c.tenant_id == tenant_id, rules.c.bus == bus, rules.c.name == name)
        async with self._changes.begin() as conn:
            result = await conn.execute(rules.delete().where(where))
            if result.rowcount > 0:
                self._changes.changed(Change.of("rules", tenant_id, bus))
        return result.rowcount > 0

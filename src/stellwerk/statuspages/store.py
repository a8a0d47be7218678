"""Where status pages are kept: `StatusStore`, on SQLAlchemy Core over SQLite or PostgreSQL.

One implementation serves both dialects (the control plane's database); the contract tests in
tests/statuspages run it on each. Writes that belong together (a component and its status
history, a page and its domains) commit in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from stellwerk.clock import from_us, to_us
from stellwerk.refs import TenantId
from stellwerk.statuspages.model import (
    CLOSED_STATUSES,
    AffectedComponent,
    Branding,
    Component,
    ComponentInput,
    ComponentStatus,
    Impact,
    Incident,
    IncidentStatus,
    IncidentUpdate,
    Page,
    PageInput,
    StatusChange,
    Visibility,
)
from stellwerk.statuspages.tables import (
    components,
    domains,
    incident_updates,
    incidents,
    pages,
    status_history,
)

# Maintenance that has begun and not completed.
_UNDER_WAY = frozenset({IncidentStatus.IN_PROGRESS, IncidentStatus.VERIFYING})


class DomainTaken(Exception):
    """A custom domain is another page's already."""

    def __init__(self, host: str) -> None:
        super().__init__(f"domain {host!r} belongs to another status page")
        self.host = host


class PageNameTaken(Exception):
    """Another tenant has a page of that name (public addresses are /status/{page})."""

    def __init__(self, name: str) -> None:
        super().__init__(f"status page name {name!r} is taken; page names are public and unique")
        self.name = name


class StatusStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    # Pages.

    async def put_page(
        self, tenant_id: TenantId, name: str, page: PageInput, now: datetime
    ) -> tuple[Page, bool]:
        """Create or replace page `name`; the page and whether it was created. Raises
        `DomainTaken` when one of its domains is another page's (of any tenant), and
        `PageNameTaken` when another tenant has a page of that name."""
        at = to_us(now)
        hosts = sorted(set(page.domains))
        values = {
            "title": page.title,
            "description": page.description,
            "time_zone": page.time_zone,
            "visibility": str(page.visibility),
            "branding": _branding(page.branding),
            "updated_at": at,
        }
        async with self._engine.begin() as conn:
            if hosts:
                taken = await conn.execute(
                    sa.select(domains.c.host).where(
                        domains.c.host.in_(hosts),
                        sa.or_(domains.c.tenant_id != tenant_id, domains.c.page != name),
                    )
                )
                first = taken.scalars().first()
                if first is not None:
                    raise DomainTaken(first)
            owner = (
                await conn.execute(sa.select(pages.c.tenant_id).where(pages.c.name == name))
            ).scalar()
            if owner is not None and owner != tenant_id:
                raise PageNameTaken(name)
            key = (pages.c.tenant_id == tenant_id) & (pages.c.name == name)
            found = await conn.execute(sa.select(pages.c.created_at).where(key))
            created_at = found.scalar()
            if created_at is None:
                created_at = at
                await conn.execute(
                    pages.insert().values(tenant_id=tenant_id, name=name, created_at=at, **values)
                )
            else:
                await conn.execute(pages.update().where(key).values(**values))
            await conn.execute(
                domains.delete().where(
                    (domains.c.tenant_id == tenant_id) & (domains.c.page == name)
                )
            )
            if hosts:
                await conn.execute(
                    domains.insert(),
                    [{"host": h, "tenant_id": tenant_id, "page": name} for h in hosts],
                )
        return (
            Page(
                name=name,
                title=page.title,
                description=page.description,
                time_zone=page.time_zone,
                domains=hosts,
                visibility=page.visibility,
                branding=page.branding,
                created_at=from_us(created_at),
                updated_at=now,
            ),
            created_at == at,
        )

    async def get_page(self, tenant_id: TenantId, name: str) -> Page | None:
        async with self._engine.connect() as conn:
            found = await self._pages(conn, tenant_id, name)
        return found[0] if found else None

    async def list_pages(self, tenant_id: TenantId) -> list[Page]:
        async with self._engine.connect() as conn:
            return await self._pages(conn, tenant_id, None)

    async def delete_page(self, tenant_id: TenantId, name: str) -> bool:
        """Delete a page with everything on it; whether it existed."""
        async with self._engine.begin() as conn:
            gone = await conn.execute(
                pages.delete().where((pages.c.tenant_id == tenant_id) & (pages.c.name == name))
            )
            for table, column in (
                (domains, domains.c.page),
                (components, components.c.page),
                (status_history, status_history.c.page),
                (incidents, incidents.c.page),
                (incident_updates, incident_updates.c.page),
            ):
                await conn.execute(
                    table.delete().where((table.c.tenant_id == tenant_id) & (column == name))
                )
        return bool(gone.rowcount)

    async def find_page(self, name: str) -> tuple[TenantId, Page] | None:
        """The page of that name, whichever tenant's it is (a public address)."""
        async with self._engine.connect() as conn:
            owner = (
                await conn.execute(sa.select(pages.c.tenant_id).where(pages.c.name == name))
            ).scalar()
            if owner is None:
                return None
            found = await self._pages(conn, TenantId(owner), name)
        return (TenantId(owner), found[0]) if found else None

    async def page_for_host(self, host: str) -> tuple[TenantId, str] | None:
        """The tenant and page a custom domain belongs to."""
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(domains.c.tenant_id, domains.c.page).where(domains.c.host == host)
                )
            ).first()
        return (TenantId(row.tenant_id), row.page) if row is not None else None

    async def _pages(
        self, conn: AsyncConnection, tenant_id: TenantId, name: str | None
    ) -> list[Page]:
        query = sa.select(pages).where(pages.c.tenant_id == tenant_id).order_by(pages.c.name)
        hosts = sa.select(domains.c.page, domains.c.host).where(domains.c.tenant_id == tenant_id)
        if name is not None:
            query = query.where(pages.c.name == name)
            hosts = hosts.where(domains.c.page == name)
        by_page: dict[str, list[str]] = {}
        for row in await conn.execute(hosts.order_by(domains.c.host)):
            by_page.setdefault(row.page, []).append(row.host)
        return [_page(row, by_page.get(row.name, [])) for row in await conn.execute(query)]

    # Components.

    async def put_component(
        self,
        tenant_id: TenantId,
        page: str,
        component_id: str,
        component: ComponentInput,
        now: datetime,
    ) -> tuple[Component, ComponentStatus | None]:
        """Create or replace a component of an existing page; it, and the status it had before
        (None: it is new). A new status goes into the history."""
        at = to_us(now)
        values = {
            "name": component.name or component_id,
            "description": component.description,
            "group_name": component.group,
            "position": component.position,
            "only_show_if_degraded": component.only_show_if_degraded,
            "status": str(component.status),
            "updated_at": at,
        }
        async with self._engine.begin() as conn:
            key = _component_key(tenant_id, page, component_id)
            row = (
                await conn.execute(
                    sa.select(components.c.status, components.c.created_at).where(key)
                )
            ).first()
            if row is None:
                previous = None
                created_at = at
                await conn.execute(
                    components.insert().values(
                        tenant_id=tenant_id, page=page, id=component_id, created_at=at, **values
                    )
                )
            else:
                previous = ComponentStatus(row.status)
                created_at = row.created_at
                await conn.execute(components.update().where(key).values(**values))
            if previous is not component.status:
                await _record_status(conn, tenant_id, page, component_id, component.status, at)
        return (
            Component(
                id=component_id,
                page=page,
                name=str(values["name"]),
                description=component.description,
                group=component.group,
                position=component.position,
                only_show_if_degraded=component.only_show_if_degraded,
                status=component.status,
                created_at=from_us(created_at),
                updated_at=now,
            ),
            previous,
        )

    async def set_status(
        self,
        tenant_id: TenantId,
        page: str,
        changes: Sequence[tuple[str, ComponentStatus]],
        now: datetime,
    ) -> list[tuple[str, ComponentStatus, ComponentStatus]]:
        """Set the status of existing components in one transaction: those that changed, as
        (component, old, new). Components that do not exist are skipped (the caller checks)."""
        at = to_us(now)
        changed = []
        async with self._engine.begin() as conn:
            for component_id, status in changes:
                key = _component_key(tenant_id, page, component_id)
                old = (await conn.execute(sa.select(components.c.status).where(key))).scalar()
                if old is None or old == status:
                    continue
                await conn.execute(
                    components.update().where(key).values(status=str(status), updated_at=at)
                )
                await _record_status(conn, tenant_id, page, component_id, status, at)
                changed.append((component_id, ComponentStatus(old), status))
        return changed

    async def get_component(
        self, tenant_id: TenantId, page: str, component_id: str
    ) -> Component | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(components).where(_component_key(tenant_id, page, component_id))
                )
            ).first()
        return _component(row) if row is not None else None

    async def list_components(self, tenant_id: TenantId, page: str) -> list[Component]:
        """A page's components in display order: by group, then position, then name."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                sa.select(components)
                .where((components.c.tenant_id == tenant_id) & (components.c.page == page))
                .order_by(
                    components.c.group_name,
                    components.c.position,
                    components.c.name,
                    components.c.id,
                )
            )
            return [_component(row) for row in rows]

    async def count_components(self, tenant_id: TenantId, page: str) -> int:
        async with self._engine.connect() as conn:
            count = await conn.execute(
                sa.select(sa.func.count()).where(
                    (components.c.tenant_id == tenant_id) & (components.c.page == page)
                )
            )
            return int(count.scalar_one())

    async def delete_component(self, tenant_id: TenantId, page: str, component_id: str) -> bool:
        async with self._engine.begin() as conn:
            gone = await conn.execute(
                components.delete().where(_component_key(tenant_id, page, component_id))
            )
            await conn.execute(
                status_history.delete().where(
                    (status_history.c.tenant_id == tenant_id)
                    & (status_history.c.page == page)
                    & (status_history.c.component == component_id)
                )
            )
        return bool(gone.rowcount)

    async def history(self, tenant_id: TenantId, page: str, since: datetime) -> list[StatusChange]:
        """The status changes of a page's components from `since` on, oldest first, each
        component's last change before `since` included (the status it had then)."""
        start = to_us(since)
        of_page = (status_history.c.tenant_id == tenant_id) & (status_history.c.page == page)
        before = (
            sa.select(status_history.c.component, sa.func.max(status_history.c.seq).label("seq"))
            .where(of_page & (status_history.c.at < start))
            .group_by(status_history.c.component)
            .subquery()
        )
        query = (
            sa.select(status_history.c.component, status_history.c.status, status_history.c.at)
            .where(
                of_page
                & (
                    (status_history.c.at >= start)
                    | status_history.c.seq.in_(sa.select(before.c.seq))
                )
            )
            .order_by(status_history.c.at, status_history.c.seq)
        )
        async with self._engine.connect() as conn:
            return [
                StatusChange(row.component, ComponentStatus(row.status), from_us(row.at))
                for row in await conn.execute(query)
            ]

    # Incidents and scheduled maintenance: reading (the read model, views.py).

    async def get_incident(
        self, tenant_id: TenantId, page: str, incident_id: str
    ) -> Incident | None:
        async with self._engine.connect() as conn:
            found = await _incidents(
                conn, tenant_id, page, (incidents.c.id == incident_id), limit=1
            )
        return found[0] if found else None

    async def list_incidents(
        self,
        tenant_id: TenantId,
        page: str,
        *,
        open_only: bool = False,
        since: datetime | None = None,
        maintenance: bool | None = None,
        limit: int | None = None,
    ) -> list[Incident]:
        """A page's incidents and maintenance, newest first (by creation), each with its
        updates. `open_only`: not resolved or completed; `since`: created from then on;
        `maintenance`: only maintenance (True) or only incidents (False)."""
        where: Any = sa.true()
        if open_only:
            where = where & incidents.c.status.not_in([str(s) for s in CLOSED_STATUSES])
        if since is not None:
            where = where & (incidents.c.created_at >= to_us(since))
        if maintenance is not None:
            is_maintenance = incidents.c.impact == str(Impact.MAINTENANCE)
            where = where & (is_maintenance if maintenance else ~is_maintenance)
        async with self._engine.connect() as conn:
            return await _incidents(conn, tenant_id, page, where, limit=limit)

    # Incidents and scheduled maintenance: writing (incidents.py).

    async def create_incident(self, tenant_id: TenantId, incident: Incident) -> None:
        """Store a new incident or maintenance with its first update(s)."""
        async with self._engine.begin() as conn:
            await conn.execute(
                incidents.insert().values(
                    tenant_id=tenant_id,
                    page=incident.page,
                    id=incident.id,
                    name=incident.name,
                    status=str(incident.status),
                    impact=str(incident.impact),
                    components=incident.components,
                    created_at=to_us(incident.created_at),
                    updated_at=to_us(incident.updated_at),
                    resolved_at=_optional_us(incident.resolved_at),
                    scheduled_for=_optional_us(incident.scheduled_for),
                    scheduled_until=_optional_us(incident.scheduled_until),
                )
            )
            for update in incident.updates:
                await _insert_update(conn, tenant_id, incident.page, incident.id, update)

    async def add_incident_update(
        self,
        tenant_id: TenantId,
        page: str,
        incident_id: str,
        update: IncidentUpdate,
        *,
        impact: Impact | None = None,
        expect: frozenset[IncidentStatus] | None = None,
    ) -> Incident | None:
        """Add `update` to an incident, which takes its status (and `impact` when given) and
        the components it affects; the incident as it is now. None: there is no such incident,
        or its status is not one of `expect` (a transition someone else made first)."""
        at = to_us(update.created_at)
        key = (
            (incidents.c.tenant_id == tenant_id)
            & (incidents.c.page == page)
            & (incidents.c.id == incident_id)
        )
        async with self._engine.begin() as conn:
            row = (await conn.execute(sa.select(incidents).where(key))).first()
            if row is None:
                return None
            components = list(row.components)
            components += [a.component for a in update.affected if a.component not in components]
            closed = update.status in CLOSED_STATUSES
            values: dict[str, Any] = {
                "status": str(update.status),
                "components": components,
                "updated_at": at,
                "resolved_at": (row.resolved_at or at) if closed else None,
            }
            if impact is not None:
                values["impact"] = str(impact)
            condition = key
            if expect is not None:
                condition = condition & incidents.c.status.in_([str(s) for s in expect])
            changed = await conn.execute(incidents.update().where(condition).values(**values))
            if not changed.rowcount:
                return None
            await _insert_update(conn, tenant_id, page, incident_id, update)
            found = await _incidents(conn, tenant_id, page, incidents.c.id == incident_id, limit=1)
        return found[0]

    async def change_maintenance(
        self,
        tenant_id: TenantId,
        page: str,
        maintenance: Incident,
        update: IncidentUpdate,
    ) -> Incident | None:
        """Store `maintenance`'s name, times and components as given, with `update` (at its
        status), unless its status moved meanwhile; the maintenance as it is now, or None when
        it is gone or moved on (the scheduler began or completed it first)."""
        key = (
            (incidents.c.tenant_id == tenant_id)
            & (incidents.c.page == page)
            & (incidents.c.id == maintenance.id)
            & (incidents.c.status == str(maintenance.status))
        )
        async with self._engine.begin() as conn:
            changed = await conn.execute(
                incidents.update()
                .where(key)
                .values(
                    name=maintenance.name,
                    components=maintenance.components,
                    scheduled_for=_optional_us(maintenance.scheduled_for),
                    scheduled_until=_optional_us(maintenance.scheduled_until),
                    updated_at=to_us(update.created_at),
                )
            )
            if not changed.rowcount:
                return None
            await _insert_update(conn, tenant_id, page, maintenance.id, update)
            found = await _incidents(
                conn, tenant_id, page, incidents.c.id == maintenance.id, limit=1
            )
        return found[0]

    async def delete_incident(self, tenant_id: TenantId, page: str, incident_id: str) -> bool:
        async with self._engine.begin() as conn:
            gone = await conn.execute(
                incidents.delete().where(
                    (incidents.c.tenant_id == tenant_id)
                    & (incidents.c.page == page)
                    & (incidents.c.id == incident_id)
                )
            )
            await conn.execute(
                incident_updates.delete().where(
                    (incident_updates.c.tenant_id == tenant_id)
                    & (incident_updates.c.page == page)
                    & (incident_updates.c.incident == incident_id)
                )
            )
        return bool(gone.rowcount)

    # Scheduled maintenance (maintenance.py).

    async def hold(
        self,
        tenant_id: TenantId,
        page: str,
        incident_id: str,
        statuses: dict[str, ComponentStatus],
    ) -> dict[str, ComponentStatus]:
        """Remember the statuses a maintenance's components had before it began, unless it
        remembers some already (a start run again after a crash); what it remembers."""
        key = (
            (incidents.c.tenant_id == tenant_id)
            & (incidents.c.page == page)
            & (incidents.c.id == incident_id)
        )
        async with self._engine.begin() as conn:
            await conn.execute(
                incidents.update()
                .where(key & incidents.c.held.is_(None))
                .values(held={c: str(s) for c, s in statuses.items()})
            )
            held = (await conn.execute(sa.select(incidents.c.held).where(key))).scalar()
        return {c: ComponentStatus(s) for c, s in (held or {}).items()}

    async def set_held(
        self,
        tenant_id: TenantId,
        page: str,
        incident_id: str,
        statuses: dict[str, ComponentStatus],
    ) -> None:
        """Replace what a maintenance under way remembers (its components changed)."""
        async with self._engine.begin() as conn:
            await conn.execute(
                incidents.update()
                .where(
                    (incidents.c.tenant_id == tenant_id)
                    & (incidents.c.page == page)
                    & (incidents.c.id == incident_id)
                )
                .values(held={c: str(s) for c, s in statuses.items()})
            )

    async def holds(
        self, tenant_id: TenantId, page: str, *, excluding: str | None = None
    ) -> dict[str, dict[str, ComponentStatus]]:
        """What each maintenance of `page` under way (in progress or verifying) remembers, by
        maintenance id."""
        query = sa.select(incidents.c.id, incidents.c.held).where(
            (incidents.c.tenant_id == tenant_id)
            & (incidents.c.page == page)
            & (incidents.c.impact == str(Impact.MAINTENANCE))
            & incidents.c.status.in_([str(s) for s in _UNDER_WAY])
        )
        if excluding is not None:
            query = query.where(incidents.c.id != excluding)
        async with self._engine.connect() as conn:
            return {
                row.id: {c: ComponentStatus(s) for c, s in (row.held or {}).items()}
                for row in await conn.execute(query)
            }

    async def due_maintenance(self, now: datetime) -> list[tuple[TenantId, str, str]]:
        """(tenant, page, id) of every maintenance, of all tenants, due to start or complete
        at `now`, the earliest first."""
        at = to_us(now)
        is_maintenance = incidents.c.impact == str(Impact.MAINTENANCE)
        due = (
            (incidents.c.status == str(IncidentStatus.SCHEDULED))
            & (incidents.c.scheduled_for <= at)
        ) | (
            incidents.c.status.in_([str(s) for s in _UNDER_WAY])
            & (incidents.c.scheduled_until <= at)
        )
        query = (
            sa.select(incidents.c.tenant_id, incidents.c.page, incidents.c.id)
            .where(is_maintenance & due)
            .order_by(incidents.c.scheduled_for)
        )
        async with self._engine.connect() as conn:
            return [(TenantId(r.tenant_id), r.page, r.id) for r in await conn.execute(query)]

    async def next_maintenance_due(self) -> datetime | None:
        """When the next maintenance, of any tenant, is due to start or complete."""
        is_maintenance = incidents.c.impact == str(Impact.MAINTENANCE)
        starts = sa.select(sa.func.min(incidents.c.scheduled_for)).where(
            is_maintenance & (incidents.c.status == str(IncidentStatus.SCHEDULED))
        )
        ends = sa.select(sa.func.min(incidents.c.scheduled_until)).where(
            is_maintenance & incidents.c.status.in_([str(s) for s in _UNDER_WAY])
        )
        async with self._engine.connect() as conn:
            times = [
                (await conn.execute(starts)).scalar(),
                (await conn.execute(ends)).scalar(),
            ]
        known = [t for t in times if t is not None]
        return from_us(min(known)) if known else None


async def _record_status(
    conn: AsyncConnection,
    tenant_id: TenantId,
    page: str,
    component_id: str,
    status: ComponentStatus,
    at: int,
) -> None:
    await conn.execute(
        status_history.insert().values(
            tenant_id=tenant_id, page=page, component=component_id, status=str(status), at=at
        )
    )


def _component_key(tenant_id: TenantId, page: str, component_id: str) -> Any:
    return (
        (components.c.tenant_id == tenant_id)
        & (components.c.page == page)
        & (components.c.id == component_id)
    )


def _branding(branding: Branding) -> dict[str, str]:
    return {
        k: v
        for k, v in (("logo_url", branding.logo_url), ("accent_color", branding.accent_color))
        if v is not None
    }


def _page(row: sa.Row[Any], hosts: list[str]) -> Page:
    return Page(
        name=row.name,
        title=row.title,
        description=row.description,
        time_zone=row.time_zone,
        domains=hosts,
        visibility=Visibility(row.visibility),
        branding=Branding(**row.branding),
        created_at=from_us(row.created_at),
        updated_at=from_us(row.updated_at),
    )


def _component(row: sa.Row[Any]) -> Component:
    return Component(
        id=row.id,
        page=row.page,
        name=row.name,
        description=row.description,
        group=row.group_name,
        position=row.position,
        only_show_if_degraded=row.only_show_if_degraded,
        status=ComponentStatus(row.status),
        created_at=from_us(row.created_at),
        updated_at=from_us(row.updated_at),
    )


async def _incidents(
    conn: AsyncConnection, tenant_id: TenantId, page: str, where: Any, *, limit: int | None
) -> list[Incident]:
    of_page = (incidents.c.tenant_id == tenant_id) & (incidents.c.page == page)
    query = (
        sa.select(incidents)
        .where(of_page & where)
        .order_by(incidents.c.created_at.desc(), incidents.c.id.desc())
    )
    if limit is not None:
        query = query.limit(limit)
    rows = list(await conn.execute(query))
    if not rows:
        return []
    updates: dict[str, list[IncidentUpdate]] = {}
    found = await conn.execute(
        sa.select(incident_updates)
        .where(
            (incident_updates.c.tenant_id == tenant_id)
            & (incident_updates.c.page == page)
            & incident_updates.c.incident.in_([row.id for row in rows])
        )
        .order_by(incident_updates.c.created_at.desc(), incident_updates.c.id.desc())
    )
    for update in found:
        updates.setdefault(update.incident, []).append(
            IncidentUpdate(
                id=update.id,
                status=IncidentStatus(update.status),
                body=update.body,
                created_at=from_us(update.created_at),
                affected=[
                    AffectedComponent(a["component"], ComponentStatus(a["status"]))
                    for a in update.affected
                ],
            )
        )
    return [_incident(row, updates.get(row.id, [])) for row in rows]


def _optional_time(us: int | None) -> datetime | None:
    return None if us is None else from_us(us)


def _incident(row: sa.Row[Any], updates: list[IncidentUpdate]) -> Incident:
    return Incident(
        id=row.id,
        page=row.page,
        name=row.name,
        status=IncidentStatus(row.status),
        impact=Impact(row.impact),
        created_at=from_us(row.created_at),
        updated_at=from_us(row.updated_at),
        resolved_at=_optional_time(row.resolved_at),
        scheduled_for=_optional_time(row.scheduled_for),
        scheduled_until=_optional_time(row.scheduled_until),
        components=list(row.components),
        updates=updates,
    )


async def _insert_update(
    conn: AsyncConnection, tenant_id: TenantId, page: str, incident_id: str, update: IncidentUpdate
) -> None:
    await conn.execute(
        incident_updates.insert().values(
            tenant_id=tenant_id,
            page=page,
            incident=incident_id,
            id=update.id,
            status=str(update.status),
            body=update.body,
            affected=[{"component": a.component, "status": str(a.status)} for a in update.affected],
            created_at=to_us(update.created_at),
        )
    )


def _optional_us(moment: datetime | None) -> int | None:
    return None if moment is None else to_us(moment)

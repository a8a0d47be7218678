"""The read model of a public page: `PageView`, all that a page, its JSON and its feeds show.

Every public rendering (HTML, Statuspage's v2 JSON, Atom and RSS) is a pure function of one
`PageView`, so that a cache can keep the view or its renderings and re-render on an
invalidation event without asking the store again. An audience's view holds only that
audience's components, and only the incidents that touch them (or no component at all): a
rendering of it can never show another audience's components.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Final

import msgspec

from stellwerk.refs import TenantId
from stellwerk.statuspages.model import (
    INDICATOR_DESCRIPTIONS,
    Component,
    Incident,
    IncidentStatus,
    Indicator,
    Page,
    indicator,
)
from stellwerk.statuspages.store import StatusStore

HISTORY_DAYS: Final = 90
HISTORY_LIMIT: Final = 50  # as Statuspage's incidents.json: the 50 most recent
_ACTIVE: Final = frozenset({IncidentStatus.IN_PROGRESS, IncidentStatus.VERIFYING})


class PageView(msgspec.Struct, frozen=True):
    """A page as one audience sees it at one moment.

    `unresolved`: open incidents (not maintenance), newest first. `active_maintenance`: in
    progress or verifying; `upcoming_maintenance`: scheduled, soonest first. `history` and
    `maintenance_history`: the most recent incidents, and maintenance, of any status (at most
    `HISTORY_LIMIT` each, created in the last `HISTORY_DAYS`), newest first. `updated_at`: the
    latest change of the page, its visible components and incidents.
    """

    page: Page
    components: list[Component]
    indicator: Indicator
    description: str
    unresolved: list[Incident]
    active_maintenance: list[Incident]
    upcoming_maintenance: list[Incident]
    history: list[Incident]
    maintenance_history: list[Incident]
    updated_at: datetime


async def page_view(
    store: StatusStore,
    tenant_id: TenantId,
    page: Page,
    *,
    now: datetime,
    components: frozenset[str] | None = None,
) -> PageView:
    """The view of `page` at `now`; `components`: the ids an audience may see (None: all)."""
    # Display order: groups by name, then components without a group; within each by position,
    # then name (NULLs sort first on SQLite and last on PostgreSQL, so the store's order is not
    # enough).
    shown = sorted(
        await store.list_components(tenant_id, page.name),
        key=lambda c: (c.group is None, c.group or "", c.position, c.name, c.id),
    )
    if components is not None:
        shown = [c for c in shown if c.id in components]
    open_ = await store.list_incidents(tenant_id, page.name, open_only=True)
    since = now - timedelta(days=HISTORY_DAYS)
    recent = await store.list_incidents(
        tenant_id, page.name, since=since, maintenance=False, limit=HISTORY_LIMIT
    )
    maintained = await store.list_incidents(
        tenant_id, page.name, since=since, maintenance=True, limit=HISTORY_LIMIT
    )
    open_ = _visible(open_, components)
    recent = _visible(recent, components)
    maintained = _visible(maintained, components)
    unresolved = [i for i in open_ if not i.is_maintenance]
    active = [i for i in open_ if i.is_maintenance and i.status in _ACTIVE]
    upcoming = sorted(
        (i for i in open_ if i.is_maintenance and i.status is IncidentStatus.SCHEDULED),
        key=lambda i: (i.scheduled_for or i.created_at, i.id),
    )
    overall = indicator(shown, open_)
    updated_at = max(
        [page.updated_at, *(c.updated_at for c in shown), *(i.updated_at for i in open_)]
        + [i.updated_at for i in (*recent, *maintained)]
    )
    return PageView(
        page=page,
        components=shown,
        indicator=overall,
        description=INDICATOR_DESCRIPTIONS[overall],
        unresolved=unresolved,
        active_maintenance=active,
        upcoming_maintenance=upcoming,
        history=recent,
        maintenance_history=maintained,
        updated_at=updated_at,
    )


async def incident_view(
    store: StatusStore,
    tenant_id: TenantId,
    page: Page,
    incident_id: str,
    *,
    components: frozenset[str] | None = None,
) -> Incident | None:
    """One incident or maintenance of `page` as an audience sees it (None: there is no such
    incident, or the audience may not see it), for the page of an incident."""
    found = await store.get_incident(tenant_id, page.name, incident_id)
    if found is None:
        return None
    visible = _visible([found], components)
    return visible[0] if visible else None


def _visible(incidents: Iterable[Incident], components: frozenset[str] | None) -> list[Incident]:
    """The incidents an audience seeing `components` may see, each narrowed to those
    components: the ones touching any of them, and the page-wide ones touching none."""
    if components is None:
        return list(incidents)
    visible = []
    for incident in incidents:
        if incident.components and not components.intersection(incident.components):
            continue
        visible.append(
            msgspec.structs.replace(
                incident,
                components=[c for c in incident.components if c in components],
                updates=[
                    msgspec.structs.replace(
                        u, affected=[a for a in u.affected if a.component in components]
                    )
                    for u in incident.updates
                ],
            )
        )
    return visible

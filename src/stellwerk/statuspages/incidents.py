"""Incidents and scheduled maintenance: opened, updated and closed, each change stored, applied to
the components it touches and announced.

An incident's update sets the status of the components it names through
`StatusPages.set_component_status`, so their history and `status.component.updated` events
come from the one place that keeps them. Every change publishes the invalidation event and one
of `status.incident.created|updated|resolved` (`status.maintenance.*` for maintenance, see
`maintenance.py` for how it starts and completes on time).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated, Any, Final

import msgspec

from stellwerk.auth import Principal
from stellwerk.clock import utc_now
from stellwerk.events import format_rfc3339
from stellwerk.service import NotFound, ValidationFailed
from stellwerk.statuspages import events
from stellwerk.statuspages.events import Publisher
from stellwerk.statuspages.model import (
    INCIDENT_STATUSES,
    AffectedComponent,
    Body,
    Impact,
    Incident,
    IncidentStatus,
    IncidentUpdate,
    Title,
)
from stellwerk.statuspages.service import StatusPages
from stellwerk.statuspages.store import StatusStore

INCIDENT_CREATED: Final = "status.incident.created"
INCIDENT_UPDATED: Final = "status.incident.updated"
INCIDENT_RESOLVED: Final = "status.incident.resolved"
MAX_AFFECTED: Final = 500  # components one update may set


# An incident's impact: any but `maintenance`, which is a maintenance's (`_check_incident_impact`
# says so; the document shows it).
IncidentImpact = Annotated[
    Impact,
    msgspec.Meta(extra_json_schema={"not": {"const": Impact.MAINTENANCE.value}}),
]


class IncidentInput(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A new incident: `components` are the ones it affects, each with the status it sets."""

    name: Title
    status: IncidentStatus = IncidentStatus.INVESTIGATING
    impact: IncidentImpact = Impact.MINOR
    body: Body = ""
    components: list[AffectedComponent] = msgspec.field(default_factory=list)


class IncidentUpdateInput(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An update: `status` and `impact` stay as they are when absent."""

    status: IncidentStatus | None = None
    impact: IncidentImpact | None = None
    body: Body = ""
    components: list[AffectedComponent] = msgspec.field(default_factory=list)


def new_id() -> str:
    """A short, URL-safe id that is hard to guess: 60 random bits in 12 base32 characters."""
    return base64.b32encode(secrets.token_bytes(8)).decode("ascii").lower()[:12]


class Incidents:
    """The use cases of incidents (and, in `maintenance.py`, of scheduled maintenance)."""

    def __init__(
        self,
        pages: StatusPages,
        store: StatusStore,
        publisher: Publisher,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.pages = pages
        self.store = store
        self.publisher = publisher
        self.clock = clock

    async def create(self, principal: Principal, page: str, body: IncidentInput) -> Incident:
        tenant_id = principal.tenant_id
        await self.pages.page(tenant_id, page)
        _check_incident_status(body.status)
        _check_incident_impact(body.impact)
        await self.check_components(principal, page, [a.component for a in body.components])
        now = self.clock()
        affected = list(body.components)
        update = IncidentUpdate(new_id(), body.status, body.body, now, affected)
        incident = Incident(
            id=new_id(),
            page=page,
            name=body.name,
            status=body.status,
            impact=body.impact,
            created_at=now,
            updated_at=now,
            resolved_at=now if body.status is IncidentStatus.RESOLVED else None,
            scheduled_for=None,
            scheduled_until=None,
            components=_unique([a.component for a in affected]),
            updates=[update],
        )
        await self.store.create_incident(tenant_id, incident)
        await self.apply(principal, page, affected)
        await self.announce(principal, INCIDENT_CREATED, incident, update)
        return incident

    async def update(
        self, principal: Principal, page: str, incident_id: str, body: IncidentUpdateInput
    ) -> Incident:
        tenant_id = principal.tenant_id
        incident = await self.get(principal, page, incident_id)
        if incident.is_maintenance:
            raise NotFound.of(f"incident {incident_id!r} of status page {page!r}")
        status = body.status or incident.status
        _check_incident_status(status)
        if body.impact is not None:
            _check_incident_impact(body.impact)
        await self.check_components(principal, page, [a.component for a in body.components])
        update = IncidentUpdate(new_id(), status, body.body, self.clock(), list(body.components))
        updated = await self.store.add_incident_update(
            tenant_id, page, incident_id, update, impact=body.impact
        )
        if updated is None:  # deleted meanwhile
            raise NotFound.of(f"incident {incident_id!r} of status page {page!r}")
        await self.apply(principal, page, update.affected)
        resolved = status is IncidentStatus.RESOLVED and not incident.closed
        await self.announce(
            principal, INCIDENT_RESOLVED if resolved else INCIDENT_UPDATED, updated, update
        )
        return updated

    async def get(self, principal: Principal, page: str, incident_id: str) -> Incident:
        """An incident or a maintenance of `page`, or `NotFound`."""
        await self.pages.page(principal.tenant_id, page)
        found = await self.store.get_incident(principal.tenant_id, page, incident_id)
        if found is None:
            raise NotFound.of(f"incident {incident_id!r} of status page {page!r}")
        return found

    async def list(
        self,
        principal: Principal,
        page: str,
        *,
        maintenance: bool,
        open_only: bool = False,
        limit: int = 100,
    ) -> list[Incident]:
        await self.pages.page(principal.tenant_id, page)
        return await self.store.list_incidents(
            principal.tenant_id, page, open_only=open_only, maintenance=maintenance, limit=limit
        )

    async def delete(self, principal: Principal, page: str, incident_id: str) -> None:
        """Delete an incident or maintenance; the components keep the status they have."""
        incident = await self.get(principal, page, incident_id)
        if not await self.store.delete_incident(principal.tenant_id, page, incident_id):
            raise NotFound.of(f"incident {incident_id!r} of status page {page!r}")
        kind = "maintenance" if incident.is_maintenance else "incident"
        await self.publisher.publish(
            principal, [events.changed(page, kind, incident_id, self.clock())]
        )

    # Shared with maintenance.

    async def check_components(
        self, principal: Principal, page: str, component_ids: Sequence[str]
    ) -> None:
        """Each of `component_ids` is a component of `page` (`NotFound` naming the first that
        is not), none comes twice and there are not too many (422)."""
        if len(component_ids) > MAX_AFFECTED:
            raise ValidationFailed(
                f"an update affects at most {MAX_AFFECTED} components", field="$.components"
            )
        if len(set(component_ids)) != len(component_ids):
            twice = next(c for c in component_ids if component_ids.count(c) > 1)
            raise ValidationFailed(f"component {twice!r} is named twice", field="$.components")
        if not component_ids:
            return
        known = {c.id for c in await self.store.list_components(principal.tenant_id, page)}
        for component_id in component_ids:
            if component_id not in known:
                raise NotFound.of(f"component {component_id!r} of status page {page!r}")

    async def apply(
        self, principal: Principal, page: str, affected: Sequence[AffectedComponent]
    ) -> None:
        if affected:
            await self.pages.set_component_status(
                principal, page, [(a.component, a.status) for a in affected]
            )

    async def announce(
        self, principal: Principal, type_: str, incident: Incident, update: IncidentUpdate
    ) -> None:
        kind = "maintenance" if incident.is_maintenance else "incident"
        now = update.created_at
        await self.publisher.publish(
            principal,
            [
                events.changed(incident.page, kind, incident.id, now),
                events.event(type_, incident.page, event_data(incident, update), now),
            ],
        )


def event_data(incident: Incident, update: IncidentUpdate) -> dict[str, Any]:
    """What a `status.incident.*` or `status.maintenance.*` event says."""
    described: dict[str, Any] = {
        "id": incident.id,
        "name": incident.name,
        "status": str(incident.status),
        "impact": str(incident.impact),
        "components": incident.components,
        "created_at": format_rfc3339(incident.created_at),
        "updated_at": format_rfc3339(incident.updated_at),
    }
    if incident.scheduled_for is not None and incident.scheduled_until is not None:
        described["scheduled_for"] = format_rfc3339(incident.scheduled_for)
        described["scheduled_until"] = format_rfc3339(incident.scheduled_until)
    return {
        "incident": described,
        "update": {
            "id": update.id,
            "status": str(update.status),
            "body": update.body,
            "affected": [
                {"component": a.component, "status": str(a.status)} for a in update.affected
            ],
        },
    }


def _check_incident_status(status: IncidentStatus) -> None:
    if status not in INCIDENT_STATUSES:
        raise ValidationFailed(
            f"status {str(status)!r} is a maintenance status; an incident is one of "
            + ", ".join(sorted(INCIDENT_STATUSES)),
            field="$.status",
        )


def _check_incident_impact(impact: Impact) -> None:
    if impact is Impact.MAINTENANCE:
        raise ValidationFailed(
            "impact 'maintenance' is for scheduled maintenance (.../maintenances); an "
            "incident's impact is none, minor, major or critical",
            field="$.impact",
        )


def _unique(ids: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(ids))


__all__ = [
    "INCIDENT_CREATED",
    "INCIDENT_RESOLVED",
    "INCIDENT_UPDATED",
    "IncidentInput",
    "IncidentUpdateInput",
    "Incidents",
    "new_id",
]

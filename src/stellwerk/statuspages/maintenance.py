"""Scheduled maintenance: announced ahead, begun and completed on time by the scheduler.

A maintenance goes `scheduled` → `in_progress` at `scheduled_for`, setting its components to
`under_maintenance`, and → `completed` at `scheduled_until`, giving each component back the
status it had before. A component that is no longer `under_maintenance` when the maintenance
completes was changed by someone else meanwhile (an incident, a rule): it keeps that status.
One still covered by another maintenance under way stays `under_maintenance`, and the other
maintenance gives it back later; a maintenance that begins on a component already under
another's maintenance remembers the status from before that one.

Each step is idempotent, so a scheduler that dies halfway and starts again (another process
takes its lease) finishes it: the statuses are remembered first (once), the components set
next (a no-op when they are already), and the maintenance's own status moves last, only from
the status it was seen in.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Final

import msgspec
import structlog

from stellwerk.auth import Principal
from stellwerk.refs import TenantId
from stellwerk.service import Conflict, NotFound, ValidationFailed
from stellwerk.statuspages.incidents import Incidents, new_id
from stellwerk.statuspages.model import (
    MAINTENANCE_STATUSES,
    AffectedComponent,
    Body,
    ComponentStatus,
    Impact,
    Incident,
    IncidentStatus,
    IncidentUpdate,
    Name,
    Title,
)

log = structlog.get_logger("stellwerk.statuspages.maintenance")

MAINTENANCE_CREATED: Final = "status.maintenance.created"
MAINTENANCE_UPDATED: Final = "status.maintenance.updated"
MAINTENANCE_STARTED: Final = "status.maintenance.started"
MAINTENANCE_COMPLETED: Final = "status.maintenance.completed"
ACTOR: Final = "status-maintenance"
# The scheduler wakes at the next due time, when a maintenance is written in this process, and
# at least this often: a maintenance written by another process is seen that late at worst.
LOOK_EVERY_SECONDS: Final = 15.0
RETRY_SECONDS: Final = 5.0  # after a failed step, before trying again

# Who a step acts as, for a tenant: `Tenants.acting`.
Acting = Callable[[TenantId, str], Awaitable[Principal]]
AwareTime = Annotated[datetime, msgspec.Meta(tz=True)]
_UNDER_WAY: Final = frozenset({IncidentStatus.IN_PROGRESS, IncidentStatus.VERIFYING})


class MaintenanceInput(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: Title
    scheduled_for: AwareTime
    scheduled_until: AwareTime
    body: Body = ""
    components: list[Name] = msgspec.field(default_factory=list)


class MaintenanceUpdateInput(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An update; `status` stays as it is when absent. `in_progress` begins the maintenance
    early, `completed` ends it early, each as the scheduler would."""

    status: IncidentStatus | None = None
    body: Body = ""


class MaintenanceChange(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A PATCH: what it names changes, what it leaves out (or sends as null) stays. `body` is
    the text of the update that records the change (none: an update without text)."""

    name: Title | None = None
    scheduled_for: AwareTime | None = None
    scheduled_until: AwareTime | None = None
    components: list[Name] | None = None
    body: Body | None = None


class Maintenances:
    def __init__(self, incidents: Incidents) -> None:
        self._incidents = incidents
        self._store = incidents.store
        self._clock = incidents.clock
        self._written = asyncio.Event()  # wakes the scheduler of this process

    async def create(self, principal: Principal, page: str, body: MaintenanceInput) -> Incident:
        tenant_id = principal.tenant_id
        await self._incidents.pages.page(tenant_id, page)
        if body.scheduled_until <= body.scheduled_for:
            raise ValidationFailed(
                "scheduled_until must be later than scheduled_for", field="$.scheduled_until"
            )
        await self._incidents.check_components(principal, page, body.components)
        now = self._clock()
        update = IncidentUpdate(new_id(), IncidentStatus.SCHEDULED, body.body, now, [])
        maintenance = Incident(
            id=new_id(),
            page=page,
            name=body.name,
            status=IncidentStatus.SCHEDULED,
            impact=Impact.MAINTENANCE,
            created_at=now,
            updated_at=now,
            resolved_at=None,
            scheduled_for=body.scheduled_for,
            scheduled_until=body.scheduled_until,
            components=list(body.components),
            updates=[update],
        )
        await self._store.create_incident(tenant_id, maintenance)
        await self._incidents.announce(principal, MAINTENANCE_CREATED, maintenance, update)
        self._written.set()
        return maintenance

    async def get(self, principal: Principal, page: str, maintenance_id: str) -> Incident:
        found = await self._incidents.get(principal, page, maintenance_id)
        if not found.is_maintenance:
            raise NotFound.of(f"maintenance {maintenance_id!r} of status page {page!r}")
        return found

    async def update(
        self, principal: Principal, page: str, maintenance_id: str, body: MaintenanceUpdateInput
    ) -> Incident:
        maintenance = await self.get(principal, page, maintenance_id)
        status = body.status or maintenance.status
        if status not in MAINTENANCE_STATUSES:
            raise ValidationFailed(
                f"status {str(status)!r} is an incident's; maintenance is one of "
                + ", ".join(sorted(MAINTENANCE_STATUSES)),
                field="$.status",
            )
        made = await self._step(principal, maintenance, status, body.body)
        if made is None:
            raise Conflict(
                f"maintenance {maintenance_id!r} changed meanwhile (the scheduler moved it on); "
                "read it and post again",
                code="ConcurrentModificationException",
            )
        self._written.set()
        return made

    async def change(
        self, principal: Principal, page: str, maintenance_id: str, body: MaintenanceChange
    ) -> Incident:
        """Rename, reschedule or re-scope a maintenance, or add words to it. Its status stays;
        the scheduler acts on the new times. Once it has begun, its start is history; a
        component added then goes under maintenance at once, and one taken out gets back the
        status it had before, as at completion."""
        maintenance = await self.get(principal, page, maintenance_id)
        if body == MaintenanceChange():
            raise ValidationFailed(
                "give one of name, scheduled_for, scheduled_until, components and body",
                field="$",
            )
        if maintenance.closed:
            raise Conflict(
                f"maintenance {maintenance_id!r} is completed: schedule a new one instead"
            )
        under_way = maintenance.status in _UNDER_WAY
        if under_way and body.scheduled_for not in (None, maintenance.scheduled_for):
            raise Conflict(
                f"maintenance {maintenance_id!r} has begun: scheduled_for cannot move "
                "(scheduled_until can)",
                field="$.scheduled_for",
            )
        starts = body.scheduled_for or maintenance.scheduled_for
        ends = body.scheduled_until or maintenance.scheduled_until
        if starts is not None and ends is not None and ends <= starts:
            given = "$.scheduled_until" if body.scheduled_until is not None else "$.scheduled_for"
            raise ValidationFailed("scheduled_until must be later than scheduled_for", field=given)
        if body.components is not None:
            await self._incidents.check_components(principal, page, body.components)
        changed = msgspec.structs.replace(
            maintenance,
            name=body.name or maintenance.name,
            scheduled_for=starts,
            scheduled_until=ends,
            components=maintenance.components if body.components is None else body.components,
        )
        affected: list[AffectedComponent] = []
        if under_way and body.components is not None:
            affected = await self._rescope(principal, maintenance, body.components)
        update = IncidentUpdate(
            new_id(), maintenance.status, body.body or "", self._clock(), affected
        )
        made = await self._store.change_maintenance(principal.tenant_id, page, changed, update)
        if made is None:
            raise Conflict(
                f"maintenance {maintenance_id!r} changed meanwhile (the scheduler moved it on); "
                "read it and send the change again",
                code="ConcurrentModificationException",
            )
        await self._incidents.announce(principal, MAINTENANCE_UPDATED, made, update)
        self._written.set()  # new times: the scheduler looks again
        return made

    # The scheduler's side.

    async def run_due(self, now: datetime, acting: Acting) -> int:
        """Begin and complete every maintenance due at `now`; how many steps failed (each is
        logged, and tried again on the next run)."""
        failed = 0
        for tenant_id, page, maintenance_id in await self._store.due_maintenance(now):
            try:
                principal = await acting(tenant_id, ACTOR)
                found = await self._store.get_incident(tenant_id, page, maintenance_id)
                if found is None:
                    continue
                if found.status is IncidentStatus.SCHEDULED:
                    began = await self._step(principal, found, IncidentStatus.IN_PROGRESS, "")
                    found = began or found
                if found.status in _UNDER_WAY and (found.scheduled_until or now) <= now:
                    await self._step(principal, found, IncidentStatus.COMPLETED, "")
            except Exception:
                failed += 1
                log.exception(
                    "maintenance_step_failed",
                    tenant=tenant_id,
                    page=page,
                    maintenance=maintenance_id,
                )
        return failed

    async def follow(self, acting: Acting) -> None:
        """The scheduler's loop: run what is due, then sleep until the next due time, a write
        in this process, or `LOOK_EVERY_SECONDS`, whichever comes first. Until cancelled."""
        while True:
            self._written.clear()
            now = self._clock()
            failed = await self.run_due(now, acting)
            wait = RETRY_SECONDS if failed else LOOK_EVERY_SECONDS
            due = await self._store.next_maintenance_due()
            if due is not None:
                wait = min(wait, max(0.0, (due - self._clock()).total_seconds()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._written.wait(), wait)

    async def _step(
        self, principal: Principal, maintenance: Incident, status: IncidentStatus, body: str
    ) -> Incident | None:
        """Move `maintenance` to `status`, beginning or completing it when that is what the
        move does; None when someone else moved it first."""
        affected: list[AffectedComponent] = []
        type_ = MAINTENANCE_UPDATED
        if status in _UNDER_WAY and maintenance.status is IncidentStatus.SCHEDULED:
            affected = await self._begin(principal, maintenance)
            type_ = MAINTENANCE_STARTED
        elif status is IncidentStatus.COMPLETED and not maintenance.closed:
            affected = await self._give_back(principal, maintenance)
            type_ = MAINTENANCE_COMPLETED
        update = IncidentUpdate(new_id(), status, body, self._clock(), affected)
        made = await self._store.add_incident_update(
            principal.tenant_id,
            maintenance.page,
            maintenance.id,
            update,
            expect=frozenset({maintenance.status}),
        )
        if made is not None:
            await self._incidents.announce(principal, type_, made, update)
        return made

    async def _begin(self, principal: Principal, maintenance: Incident) -> list[AffectedComponent]:
        tenant_id, page = principal.tenant_id, maintenance.page
        now = {c.id: c.status for c in await self._store.list_components(tenant_id, page)}
        others = await self._store.holds(tenant_id, page, excluding=maintenance.id)
        before: dict[str, ComponentStatus] = {}
        for component in maintenance.components:
            if component not in now:
                continue  # deleted since the maintenance was scheduled
            before[component] = now[component]
            for held in others.values():
                if now[component] is ComponentStatus.UNDER_MAINTENANCE and component in held:
                    before[component] = held[component]
        held = await self._store.hold(tenant_id, page, maintenance.id, before)
        affected = [
            AffectedComponent(c, ComponentStatus.UNDER_MAINTENANCE) for c in held if c in now
        ]
        await self._incidents.apply(principal, page, affected)
        return affected

    async def _rescope(
        self, principal: Principal, maintenance: Incident, components: list[str]
    ) -> list[AffectedComponent]:
        """Change the components of a maintenance under way: those added go under
        maintenance, their statuses remembered first; those taken out get back what they had
        (unless changed meanwhile or still under another maintenance), and are forgotten
        only then. So a change that fails halfway and is sent again finishes the same way."""
        tenant_id, page = principal.tenant_id, maintenance.page
        now = {c.id: c.status for c in await self._store.list_components(tenant_id, page)}
        others = await self._store.holds(tenant_id, page)
        mine = others.pop(maintenance.id, {})
        added = [c for c in components if c not in maintenance.components and c in now]
        removed = [c for c in maintenance.components if c not in components]
        before: dict[str, ComponentStatus] = {}
        for component in added:
            if component in mine:
                continue  # remembered by a first try of this change
            before[component] = now[component]
            for held in others.values():
                if now[component] is ComponentStatus.UNDER_MAINTENANCE and component in held:
                    before[component] = held[component]
        still_covered = {c for held in others.values() for c in held}
        affected = [AffectedComponent(c, ComponentStatus.UNDER_MAINTENANCE) for c in added]
        affected += [
            AffectedComponent(c, mine[c])
            for c in removed
            if c in mine
            and now.get(c) is ComponentStatus.UNDER_MAINTENANCE
            and c not in still_covered
        ]
        remembered = {**mine, **before}
        await self._store.set_held(tenant_id, page, maintenance.id, remembered)
        await self._incidents.apply(principal, page, affected)
        kept = {c: s for c, s in remembered.items() if c not in removed}
        await self._store.set_held(tenant_id, page, maintenance.id, kept)
        return affected

    async def _give_back(
        self, principal: Principal, maintenance: Incident
    ) -> list[AffectedComponent]:
        tenant_id, page = principal.tenant_id, maintenance.page
        holds = await self._store.holds(tenant_id, page)
        held = holds.pop(maintenance.id, {})
        still_covered = {c for other in holds.values() for c in other}
        now = {c.id: c.status for c in await self._store.list_components(tenant_id, page)}
        affected = [
            AffectedComponent(component, status)
            for component, status in held.items()
            if now.get(component) is ComponentStatus.UNDER_MAINTENANCE
            and component not in still_covered
        ]
        await self._incidents.apply(principal, page, affected)
        return affected

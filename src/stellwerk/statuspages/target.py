"""The `status` rule target: events that match a rule set a component's status, or open,
update and resolve an incident, on one of the tenant's status pages.

A target's `parameters` are an instruction (below). Without an input transformer they are the
whole instruction: every matching event carries it out. With one, the transformer's output (a
JSON object) is laid over them, so the event can say which component, which status, which
incident: an Alertmanager webhook, a Grafana alert or any CloudEvent becomes a status change.

    {"page": "acme", "component": "api", "status": "major_outage"}
    {"page": "acme", "incident": {"key": "<alert group>", "status": "firing" | "resolved" |
        "investigating" | "identified" | "monitoring", "name": "...", "impact": "major",
        "body": "...", "components": {"api": "major_outage"}}}

An incident is found by its `key` among those this target type opened on the page: an event of
a key with no open incident opens one (`firing` is `investigating`); a later one adds an update
(`firing` keeps the status it has); `resolved` resolves it and sets the components it affected
(and those the instruction names) back to `operational`. An instruction that cannot be
carried out (no such page or component, a bad status) is dead-lettered with the reason, since
no retry would mend it.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Final

import msgspec
import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from stellwerk.auth import Principal
from stellwerk.capability import (
    Delivered,
    Delivery,
    GiveUp,
    InvalidRuleError,
    Outcome,
    RetryLater,
    Target,
    TargetSpec,
)
from stellwerk.refs import BusRef, TenantId
from stellwerk.service import NotFound, ServiceError, Tenants, Unavailable
from stellwerk.statuspages.incidents import IncidentInput, Incidents, IncidentUpdateInput
from stellwerk.statuspages.model import (
    AffectedComponent,
    ComponentStatus,
    Impact,
    IncidentStatus,
    Name,
    Title,
)
from stellwerk.statuspages.service import StatusPages
from stellwerk.statuspages.tables import incident_keys

log = structlog.get_logger("stellwerk.statuspages")

TYPE: Final = "status"
ACTOR: Final = "stellwerk:status-target"
FIRING: Final = "firing"


class IncidentInstruction(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    key: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    status: str = FIRING
    name: Title | None = None
    impact: Impact | None = None
    body: Annotated[str, msgspec.Meta(max_length=20_000)] = ""
    components: dict[Name, ComponentStatus] = msgspec.field(default_factory=dict)


class Instruction(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    page: Name
    component: Name | None = None
    status: ComponentStatus | None = None
    incident: IncidentInstruction | None = None


class Partial(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Saved parameters: an instruction that a transformer may complete."""

    page: Name
    component: Name | None = None
    status: ComponentStatus | None = None
    incident: dict[str, Any] | None = None


_STATUSES: Final = frozenset({FIRING, "investigating", "identified", "monitoring", "resolved"})


def _complete(instruction: Instruction) -> str | None:
    """Why the instruction cannot be carried out as it is, or None."""
    if instruction.incident is None:
        if instruction.component is None or instruction.status is None:
            return "name a component and its status, or an incident"
        return None
    if instruction.component is not None or instruction.status is not None:
        return "an instruction sets a component's status or an incident, not both"
    if instruction.incident.status not in _STATUSES:
        return (
            f"incident status {instruction.incident.status!r} is not one of "
            f"{', '.join(sorted(_STATUSES))}"
        )
    return None


def instruction_of(parameters: dict[str, Any], overlay: Any) -> Instruction:
    """The parameters with a transformer's output laid over them (an incident's fields one by
    one); raises `ValueError` saying what is wrong."""
    merged = dict(parameters)
    if overlay is not None:
        if not isinstance(overlay, dict):
            raise ValueError(
                f"the input transformer made a {type(overlay).__name__}, not a JSON object"
            )
        for name, value in overlay.items():
            if name == "incident" and isinstance(value, dict):
                merged["incident"] = {**(merged.get("incident") or {}), **value}
            else:
                merged[name] = value
    try:
        instruction = msgspec.convert(merged, Instruction)
    except msgspec.ValidationError as exc:
        raise ValueError(str(exc)) from None
    problem = _complete(instruction)
    if problem is not None:
        raise ValueError(problem)
    return instruction


class IncidentKeys:
    """Which open incident each key names, per page."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def get(self, tenant_id: TenantId, page: str, key: str) -> str | None:
        async with self._engine.connect() as conn:
            found = await conn.execute(
                sa.select(incident_keys.c.incident).where(
                    (incident_keys.c.tenant_id == tenant_id)
                    & (incident_keys.c.page == page)
                    & (incident_keys.c.key == key)
                )
            )
            incident: str | None = found.scalar()
            return incident

    async def put(self, tenant_id: TenantId, page: str, key: str, incident: str) -> None:
        where = (
            (incident_keys.c.tenant_id == tenant_id)
            & (incident_keys.c.page == page)
            & (incident_keys.c.key == key)
        )
        async with self._engine.begin() as conn:
            await conn.execute(incident_keys.delete().where(where))
            await conn.execute(
                incident_keys.insert().values(
                    tenant_id=tenant_id, page=page, key=key, incident=incident
                )
            )


class StatusTargetKind:
    """Registered as target type `status` (`CapabilityContext.target_kinds`)."""

    def __init__(
        self, pages: StatusPages, incidents: Incidents, tenants: Tenants, keys: IncidentKeys
    ) -> None:
        self._pages = pages
        self._incidents = incidents
        self._tenants = tenants
        self._keys = keys
        # One instruction per incident key at a time in this process: two firings delivered at
        # once would each find no incident of their key and open one each.
        self._busy: dict[tuple[str, str, str], asyncio.Lock] = {}

    async def check(self, principal: Principal, spec: TargetSpec, where: str) -> TargetSpec:
        field = f"{where}.parameters"
        if spec.parameters is None:
            raise InvalidRuleError("a status target needs parameters (at least a page)", field)
        try:
            partial = msgspec.convert(spec.parameters, Partial)
        except msgspec.ValidationError as exc:
            message, found, at = str(exc).rpartition(" - at `$")
            where_in = at.rstrip("`") if found else ""
            raise InvalidRuleError(message if found else str(exc), field + where_in) from None
        try:
            await self._pages.get_page(principal, partial.page)
            if partial.component is not None:
                await self._pages.get_component(principal, partial.page, partial.component)
        except NotFound as exc:
            raise InvalidRuleError(exc.message, field) from None
        if spec.input_transformer is None:
            # Without a transformer the parameters are the whole instruction.
            try:
                instruction_of(spec.parameters, None)
            except ValueError as exc:
                raise InvalidRuleError(
                    f"{exc} (or add an input transformer that makes the rest)", field
                ) from None
        return spec

    def build(self, owner: BusRef, spec: TargetSpec) -> Target:
        return StatusTarget(self, owner, spec)

    async def carry_out(self, owner: BusRef, instruction: Instruction) -> str:
        """Do what the instruction says; what was done. Raises `ServiceError`s."""
        principal = await self._tenants.acting_as(owner.tenant, ACTOR)
        page = instruction.page
        if instruction.incident is None:
            assert instruction.component is not None
            assert instruction.status is not None
            made = await self._pages.set_component_status(
                principal, page, [(instruction.component, instruction.status)]
            )
            return f"{instruction.component} is {instruction.status}" + ("" if made else " still")
        return await self.incident(principal, page, instruction.incident)

    async def incident(self, principal: Principal, page: str, wanted: IncidentInstruction) -> str:
        """Open, update or resolve the incident of `wanted.key` (also a failing check's), one
        instruction of a key after the other."""
        slot = (principal.tenant_id, page, wanted.key)
        lock = self._busy.setdefault(slot, asyncio.Lock())
        try:
            async with lock:
                return await self._incident(principal, page, wanted)
        finally:
            if not lock.locked() and self._busy.get(slot) is lock:
                del self._busy[slot]

    async def _incident(self, principal: Principal, page: str, wanted: IncidentInstruction) -> str:
        tenant_id = principal.tenant_id
        affected = [AffectedComponent(c, s) for c, s in wanted.components.items()]
        known = await self._keys.get(tenant_id, page, wanted.key)
        incident = None
        if known is not None:
            try:
                incident = await self._incidents.get(principal, page, known)
            except NotFound:
                incident = None
        resolving = wanted.status == "resolved"
        if incident is None or incident.closed:
            if resolving:
                return f"no open incident of key {wanted.key!r}: nothing to resolve"
            if wanted.name is None:
                raise ValueError(f"opening an incident for key {wanted.key!r} needs its name")
            opening = (
                IncidentStatus.INVESTIGATING
                if wanted.status == FIRING
                else IncidentStatus(wanted.status)
            )
            created = await self._incidents.create(
                principal,
                page,
                IncidentInput(
                    name=wanted.name,
                    status=opening,
                    impact=wanted.impact or Impact.MAJOR,
                    body=wanted.body,
                    components=affected,
                ),
            )
            await self._keys.put(tenant_id, page, wanted.key, created.id)
            return f"opened incident {created.id}"
        if resolving:
            # Back to operational: what the incident took down comes up with it (the statuses
            # an instruction names are those while it is open; Alertmanager sends the same
            # labels when it resolves).
            named = [
                *incident.components,
                *(c for c in wanted.components if c not in incident.components),
            ]
            affected = [AffectedComponent(c, ComponentStatus.OPERATIONAL) for c in named]
        status = None if wanted.status == FIRING else IncidentStatus(wanted.status)
        await self._incidents.update(
            principal,
            page,
            incident.id,
            IncidentUpdateInput(
                status=status, impact=wanted.impact, body=wanted.body, components=affected
            ),
        )
        return f"{'resolved' if resolving else 'updated'} incident {incident.id}"


class StatusTarget:
    """One rule's `status` target."""

    def __init__(self, kind: StatusTargetKind, owner: BusRef, spec: TargetSpec) -> None:
        self._kind = kind
        self._owner = owner
        self._parameters = spec.parameters or {}
        self._transformed = spec.input_transformer is not None

    async def deliver(self, delivery: Delivery) -> Outcome:
        try:
            overlay = msgspec.json.decode(delivery.payload) if self._transformed else None
            instruction = instruction_of(self._parameters, overlay)
        except (ValueError, msgspec.DecodeError) as exc:
            return GiveUp(f"not a status instruction: {exc}")
        try:
            done = await self._kind.carry_out(self._owner, instruction)
        except ValueError as exc:
            return GiveUp(str(exc))
        except Unavailable as exc:
            return RetryLater(exc.message, retry_after=exc.retry_after)
        except ServiceError as exc:
            return GiveUp(exc.message)
        except (OSError, sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            return RetryLater(f"the status pages' database: {type(exc).__name__}: {exc}")
        return Delivered(done)

    async def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"StatusTarget({self._owner}, {self._parameters.get('page')!r})"

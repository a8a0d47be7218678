"""What a status page is made of, as the admin API takes and shows it.

A page holds components (grouped, ordered) whose status changes over time, and incidents: the
unplanned ones and the scheduled maintenance, which Statuspage models as incidents too (impact
`maintenance`, statuses `scheduled`, `in_progress`, `verifying`, `completed`). Every status a
component takes is kept with its time, so that uptime and the page's overall indicator are
derived, never stored.
"""

from __future__ import annotations

import enum
import zoneinfo
from datetime import datetime
from typing import Annotated

import msgspec

from stellwerk.names import NAME_RULE

MAX_TITLE: int = 200
MAX_DESCRIPTION: int = 2_000
MAX_BODY: int = 20_000
MAX_DOMAINS: int = 10
MAX_COMPONENTS_PER_PAGE: int = 5_000

Name = Annotated[str, msgspec.Meta(pattern=f"^{NAME_RULE}$")]
Title = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TITLE)]
Description = Annotated[str, msgspec.Meta(max_length=MAX_DESCRIPTION)]
Body = Annotated[str, msgspec.Meta(max_length=MAX_BODY)]
# A host name as it comes in the Host header, without the port.
Domain = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$"
    ),
]
Colour = Annotated[str, msgspec.Meta(pattern=r"^#[0-9a-fA-F]{6}$")]
Url = Annotated[str, msgspec.Meta(pattern=r"^https?://[^\s]+$", max_length=2_000)]


class ComponentStatus(enum.StrEnum):
    OPERATIONAL = "operational"
    DEGRADED_PERFORMANCE = "degraded_performance"
    PARTIAL_OUTAGE = "partial_outage"
    MAJOR_OUTAGE = "major_outage"
    UNDER_MAINTENANCE = "under_maintenance"


class IncidentStatus(enum.StrEnum):
    # Incidents.
    INVESTIGATING = "investigating"
    IDENTIFIED = "identified"
    MONITORING = "monitoring"
    RESOLVED = "resolved"
    # Scheduled maintenance.
    SCHEDULED = "scheduled"
    IN_PROGRESS = "in_progress"
    VERIFYING = "verifying"
    COMPLETED = "completed"


INCIDENT_STATUSES = frozenset(
    {
        IncidentStatus.INVESTIGATING,
        IncidentStatus.IDENTIFIED,
        IncidentStatus.MONITORING,
        IncidentStatus.RESOLVED,
    }
)
MAINTENANCE_STATUSES = frozenset(
    {
        IncidentStatus.SCHEDULED,
        IncidentStatus.IN_PROGRESS,
        IncidentStatus.VERIFYING,
        IncidentStatus.COMPLETED,
    }
)
CLOSED_STATUSES = frozenset({IncidentStatus.RESOLVED, IncidentStatus.COMPLETED})


class Impact(enum.StrEnum):
    NONE = "none"
    MINOR = "minor"
    MAJOR = "major"
    CRITICAL = "critical"
    MAINTENANCE = "maintenance"


class Indicator(enum.StrEnum):
    """The page's overall status, as Statuspage's `status.indicator`."""

    NONE = "none"
    MINOR = "minor"
    MAJOR = "major"
    CRITICAL = "critical"
    MAINTENANCE = "maintenance"


class Visibility(enum.StrEnum):
    PUBLIC = "public"
    PRIVATE = "private"  # a password or a signed access link
    AUDIENCE = "audience"  # each audience sees its own components


class Branding(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    logo_url: Url | None = None
    accent_color: Colour | None = None


# The zones `checked_time_zone` takes, listed for the document (decoding leaves the check to it).
TimeZone = Annotated[
    str, msgspec.Meta(extra_json_schema={"enum": sorted(zoneinfo.available_timezones())})
]


class PageInput(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    title: Title
    description: Description = ""
    time_zone: TimeZone = "UTC"
    domains: list[Domain] = msgspec.field(default_factory=list)
    visibility: Visibility = Visibility.PUBLIC
    branding: Branding = msgspec.field(default_factory=Branding)


class Page(msgspec.Struct, frozen=True):
    name: str
    title: str
    description: str
    time_zone: str
    domains: list[str]
    visibility: Visibility
    branding: Branding
    created_at: datetime
    updated_at: datetime


class ComponentInput(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A component as PUT: `name` is what the page shows (the path's name when absent)."""

    name: Annotated[str, msgspec.Meta(max_length=MAX_TITLE)] = ""
    description: Description = ""
    group: Annotated[str, msgspec.Meta(max_length=MAX_TITLE)] | None = None
    position: int = 0
    only_show_if_degraded: bool = False
    status: ComponentStatus = ComponentStatus.OPERATIONAL


class Component(msgspec.Struct, frozen=True):
    id: str
    page: str
    name: str
    description: str
    group: str | None
    position: int
    only_show_if_degraded: bool
    status: ComponentStatus
    created_at: datetime
    updated_at: datetime


class StatusChange(msgspec.Struct, frozen=True):
    """One status a component took, from `at` until its next change."""

    component: str
    status: ComponentStatus
    at: datetime


class AffectedComponent(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A component an incident update touches, and the status it sets."""

    component: Name
    status: ComponentStatus


class IncidentUpdate(msgspec.Struct, frozen=True):
    id: str
    status: IncidentStatus
    body: str
    created_at: datetime
    affected: list[AffectedComponent]


class Incident(msgspec.Struct, frozen=True):
    """An incident, or a scheduled maintenance (`impact` is `maintenance`); `updates` newest
    first, as Statuspage shows them."""

    id: str
    page: str
    name: str
    status: IncidentStatus
    impact: Impact
    created_at: datetime
    updated_at: datetime
    resolved_at: datetime | None
    scheduled_for: datetime | None
    scheduled_until: datetime | None
    components: list[str]
    updates: list[IncidentUpdate]

    @property
    def is_maintenance(self) -> bool:
        return self.impact is Impact.MAINTENANCE

    @property
    def closed(self) -> bool:
        return self.status in CLOSED_STATUSES


# What the overall indicator is for each component status, worst last.
_SEVERITY: dict[ComponentStatus, int] = {
    ComponentStatus.OPERATIONAL: 0,
    ComponentStatus.UNDER_MAINTENANCE: 1,
    ComponentStatus.DEGRADED_PERFORMANCE: 2,
    ComponentStatus.PARTIAL_OUTAGE: 3,
    ComponentStatus.MAJOR_OUTAGE: 4,
}
_IMPACT_SEVERITY: dict[Impact, int] = {
    Impact.NONE: 0,
    Impact.MAINTENANCE: 1,
    Impact.MINOR: 2,
    Impact.MAJOR: 3,
    Impact.CRITICAL: 4,
}


def indicator(components: list[Component], incidents: list[Incident]) -> Indicator:
    """The page's overall status, as Statuspage derives it: the worst of its open incidents'
    impacts and its components' statuses (a major outage is `critical`, a partial one `major`,
    degraded performance `minor`); `maintenance` when only maintenance is under way."""
    worst = 0
    for component in components:
        worst = max(worst, _SEVERITY[component.status])
    for incident in incidents:
        if incident.closed:
            continue
        if incident.is_maintenance and incident.status is IncidentStatus.SCHEDULED:
            continue
        worst = max(worst, _IMPACT_SEVERITY[incident.impact])
    return (
        Indicator.NONE,
        Indicator.MAINTENANCE,
        Indicator.MINOR,
        Indicator.MAJOR,
        Indicator.CRITICAL,
    )[worst]


INDICATOR_DESCRIPTIONS: dict[Indicator, str] = {
    Indicator.NONE: "All Systems Operational",
    Indicator.MINOR: "Minor Service Outage",
    Indicator.MAJOR: "Partial System Outage",
    Indicator.CRITICAL: "Major System Outage",
    Indicator.MAINTENANCE: "Service Under Maintenance",
}

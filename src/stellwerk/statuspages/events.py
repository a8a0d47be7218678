"""The events status pages publish on the tenant's internal bus.

Two kinds, on one bus (`stellwerk.internal`) that rules can route from like any other:
- `stellwerk.statuspage.changed`, the invalidation event: something on a page changed, so its
  cached renderings are stale. The content updater follows these (see `cache.py`).
- the status changes themselves, for people and systems: `status.component.updated`,
  `status.incident.created|updated|resolved`, `status.maintenance.*`.

The internal bus is created on first use, through the buses facade like any bus.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from stellwerk.auth import Principal
from stellwerk.events import CloudEvent, format_rfc3339
from stellwerk.refs import TenantId
from stellwerk.service import Buses, BusInput, Ingest, NotFound

INTERNAL_BUS: Final = "stellwerk.internal"
SOURCE: Final = "stellwerk/status-pages"
CHECKS_SOURCE: Final = "stellwerk/checks"
CHANGED: Final = "stellwerk.statuspage.changed"
COMPONENT_UPDATED: Final = "status.component.updated"


def event(type_: str, page: str, data: dict[str, Any], now: datetime) -> CloudEvent:
    """An event about `page`: its subject is the page's name, so a rule can pick a page."""
    return CloudEvent(
        id=uuid.uuid4().hex,
        source=SOURCE,
        type=type_,
        subject=page,
        time=format_rfc3339(now),
        datacontenttype="application/json",
        data={"page": page, **data},
    )


def check_event(type_: str, check: str, data: dict[str, Any], now: datetime) -> CloudEvent:
    """An event about synthetic check `check` (its subject)."""
    return CloudEvent(
        id=uuid.uuid4().hex,
        source=CHECKS_SOURCE,
        type=type_,
        subject=check,
        time=format_rfc3339(now),
        datacontenttype="application/json",
        data=data,
    )


def changed(page: str, kind: str, id_: str | None, now: datetime) -> CloudEvent:
    """The invalidation event: `kind` (page, component, incident) `id_` of `page` changed."""
    return event(CHANGED, page, {"kind": kind, "id": id_}, now)


class Publisher:
    """Appends status pages' events to the tenant's internal bus, creating it once."""

    def __init__(self, ingest: Ingest, buses: Buses) -> None:
        self._ingest = ingest
        self._buses = buses
        self._known: set[TenantId] = set()  # tenants whose internal bus exists

    async def publish(self, principal: Principal, events: Sequence[CloudEvent]) -> list[int]:
        """Append `events` durably; their positions on the internal bus."""
        if principal.tenant_id not in self._known:
            try:
                await self._buses.record(principal.tenant_id, INTERNAL_BUS)
            except NotFound:
                await self._buses.put(
                    principal,
                    INTERNAL_BUS,
                    BusInput(description="Stellwerk's own events: status pages and their changes"),
                )
            self._known.add(principal.tenant_id)
        try:
            return await self._ingest.publish(principal.ref, INTERNAL_BUS, events)
        except NotFound:
            # The bus was deleted since: make it again, once.
            self._known.discard(principal.tenant_id)
            await self._buses.put(principal, INTERNAL_BUS, BusInput())
            self._known.add(principal.tenant_id)
            return await self._ingest.publish(principal.ref, INTERNAL_BUS, events)

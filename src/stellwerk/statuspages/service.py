"""The status pages' use cases: pages and components (incidents and maintenance in
`incidents.py`), each checked, stored and announced.

Every change is announced after it is stored: an invalidation event for the caches, and, when a
component's status changed, a `status.component.updated` event for anyone's rules. Callers are
the admin API, the `status` rule target and the scheduler's own jobs; none of them has to
remember to announce.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Awaitable, Callable
from datetime import datetime

import msgspec

from stellwerk.auth import Principal
from stellwerk.capability import Listing
from stellwerk.clock import utc_now
from stellwerk.events import CloudEvent
from stellwerk.refs import TenantId
from stellwerk.service import Conflict, NotFound, ValidationFailed
from stellwerk.statuspages import events
from stellwerk.statuspages.events import Publisher
from stellwerk.statuspages.model import (
    MAX_COMPONENTS_PER_PAGE,
    MAX_DOMAINS,
    Component,
    ComponentInput,
    ComponentStatus,
    Page,
    PageInput,
    StatusChange,
)
from stellwerk.statuspages.store import DomainTaken, PageNameTaken, StatusStore


def checked_time_zone(name: str) -> str:
    """An IANA time zone name, or 422 naming the field."""
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValidationFailed(
            f"time_zone {name!r} is not an IANA time zone (such as 'Europe/Berlin')",
            field="$.time_zone",
        ) from None
    return name


class StatusPages:
    def __init__(
        self,
        store: StatusStore,
        publisher: Publisher,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.store = store
        self._publisher = publisher
        self._clock = clock
        # What else forgets a deleted page (its logins, its subscribers), called after it is gone.
        self.on_delete: list[Callable[[Principal, str], Awaitable[None]]] = []

    # Pages.

    async def put_page(self, principal: Principal, name: str, body: PageInput) -> tuple[Page, bool]:
        checked_time_zone(body.time_zone)
        if len(body.domains) > MAX_DOMAINS:
            raise ValidationFailed(f"a page has at most {MAX_DOMAINS} domains", field="$.domains")
        now = self._clock()
        try:
            page, created = await self.store.put_page(principal.tenant_id, name, body, now)
        except DomainTaken as exc:
            raise Conflict(str(exc), code="DomainTaken", field="$.domains") from None
        except PageNameTaken as exc:
            raise Conflict(str(exc), code="PageNameTaken") from None
        await self._publisher.publish(principal, [events.changed(name, "page", None, now)])
        return page, created

    async def get_page(self, principal: Principal, name: str) -> Page:
        return await self.page(principal.tenant_id, name)

    async def page(self, tenant_id: TenantId, name: str) -> Page:
        """The page, or `NotFound`: the check every use case of a page starts with."""
        page = await self.store.get_page(tenant_id, name)
        if page is None:
            raise NotFound.of(f"status page {name!r}")
        return page

    async def public_page(self, name: str) -> tuple[TenantId, Page]:
        """A page by its public name, whoever owns it, or `NotFound` (public routes)."""
        found = await self.store.find_page(name)
        if found is None:
            raise NotFound.of(f"status page {name!r}")
        return found

    async def list_pages(self, principal: Principal) -> list[Page]:
        return await self.store.list_pages(principal.tenant_id)

    async def listing(self, principal: Principal) -> list[Listing]:
        """The tenant's pages as other capabilities list them (`Facades.directories`)."""
        return [
            Listing(p.name, f"{p.title} · {p.visibility}", f"/status/{p.name}")
            for p in await self.list_pages(principal)
        ]

    async def delete_page(self, principal: Principal, name: str) -> None:
        if not await self.store.delete_page(principal.tenant_id, name):
            raise NotFound.of(f"status page {name!r}")
        for forget in self.on_delete:
            await forget(principal, name)
        await self._publisher.publish(
            principal, [events.changed(name, "page", None, self._clock())]
        )

    # Components.

    async def put_component(
        self, principal: Principal, page: str, component_id: str, body: ComponentInput
    ) -> tuple[Component, bool]:
        """Create or replace a component; it, and whether it was created."""
        tenant_id = principal.tenant_id
        await self.page(tenant_id, page)
        existing = await self.store.get_component(tenant_id, page, component_id)
        if existing is None:
            count = await self.store.count_components(tenant_id, page)
            if count >= MAX_COMPONENTS_PER_PAGE:
                raise Conflict(
                    f"page {page!r} has {count} components, the most a page may have",
                    code="LimitExceeded",
                )
        now = self._clock()
        component, previous = await self.store.put_component(
            tenant_id, page, component_id, body, now
        )
        announced = [events.changed(page, "component", component_id, now)]
        if previous is not None and previous is not component.status:
            announced.append(_status_event(page, component, previous, now))
        await self._publisher.publish(principal, announced)
        return component, previous is None

    async def set_component_status(
        self, principal: Principal, page: str, changes: list[tuple[str, ComponentStatus]]
    ) -> list[tuple[str, ComponentStatus, ComponentStatus]]:
        """Set components' statuses (an incident update, a maintenance starting, a rule's
        `status` target); the changes made. Raises `NotFound` naming a missing component."""
        tenant_id = principal.tenant_id
        await self.page(tenant_id, page)
        known = {c.id: c for c in await self.store.list_components(tenant_id, page)}
        for component_id, _status in changes:
            if component_id not in known:
                raise NotFound.of(f"component {component_id!r} of status page {page!r}")
        now = self._clock()
        made = await self.store.set_status(tenant_id, page, changes, now)
        if made:
            announced = [events.changed(page, "component", None, now)]
            for component_id, old, new in made:
                component = known[component_id]
                updated = msgspec.structs.replace(component, status=new, updated_at=now)
                announced.append(_status_event(page, updated, old, now))
            await self._publisher.publish(principal, announced)
        return made

    async def get_component(self, principal: Principal, page: str, component_id: str) -> Component:
        await self.page(principal.tenant_id, page)
        component = await self.store.get_component(principal.tenant_id, page, component_id)
        if component is None:
            raise NotFound.of(f"component {component_id!r} of status page {page!r}")
        return component

    async def list_components(self, principal: Principal, page: str) -> list[Component]:
        await self.page(principal.tenant_id, page)
        return await self.store.list_components(principal.tenant_id, page)

    async def delete_component(self, principal: Principal, page: str, component_id: str) -> None:
        await self.page(principal.tenant_id, page)
        if not await self.store.delete_component(principal.tenant_id, page, component_id):
            raise NotFound.of(f"component {component_id!r} of status page {page!r}")
        await self._publisher.publish(
            principal, [events.changed(page, "component", component_id, self._clock())]
        )

    async def history(self, tenant_id: TenantId, page: str, since: datetime) -> list[StatusChange]:
        return await self.store.history(tenant_id, page, since)


def _status_event(
    page: str, component: Component, previous: ComponentStatus, now: datetime
) -> CloudEvent:
    return events.event(
        events.COMPONENT_UPDATED,
        page,
        {
            "component": {
                "id": component.id,
                "name": component.name,
                "group": component.group,
                "status": str(component.status),
            },
            "old_status": str(previous),
            "new_status": str(component.status),
        },
        now,
    )

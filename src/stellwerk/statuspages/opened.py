"""Status pages at work in one process: what `open` builds from the core's context."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from stellwerk.auth import Principal
from stellwerk.capability import CapabilityContext, Duty, Role
from stellwerk.statuspages import render
from stellwerk.statuspages.access import Access
from stellwerk.statuspages.access_store import AccessStore
from stellwerk.statuspages.attempts import Attempts, DatabaseLimits
from stellwerk.statuspages.cache import PageCache
from stellwerk.statuspages.check_store import Check, CheckResult, CheckStore
from stellwerk.statuspages.checks import Checks
from stellwerk.statuspages.domains import Domains
from stellwerk.statuspages.events import Publisher
from stellwerk.statuspages.incidents import Incidents
from stellwerk.statuspages.maintenance import ACTOR, Maintenances
from stellwerk.statuspages.model import ComponentStatus, Impact
from stellwerk.statuspages.notices import Mailer, Notifier
from stellwerk.statuspages.service import StatusPages
from stellwerk.statuspages.store import StatusStore
from stellwerk.statuspages.subscriber_store import SubscriberStore
from stellwerk.statuspages.subscribers import Subscribers
from stellwerk.statuspages.tables import VERSION_TABLE
from stellwerk.statuspages.target import TYPE, IncidentInstruction, IncidentKeys, StatusTargetKind
from stellwerk.statuspages.updater import ContentUpdater, CursorStore

NAME: Final = "status-pages"
MIGRATIONS: Final = Path(__file__).parent / "migrations"


class StatusPagesOpened:
    """The facades over the store, and the loops each role runs."""

    def __init__(
        self,
        *,
        pages: StatusPages,
        incidents: Incidents,
        maintenances: Maintenances,
        checks: Checks,
        domains: Domains,
        access: Access,
        subscribers: Subscribers,
        duties: dict[Role, list[Duty]],
        cache: PageCache,
    ) -> None:
        self.pages = pages
        self.incidents = incidents
        self.maintenances = maintenances
        self.checks = checks
        self.domains = domains
        self.access = access
        self.subscribers = subscribers
        self._duties = duties
        self.cache = cache

    def duties(self) -> Mapping[Role, Sequence[Duty]]:
        return self._duties

    async def close(self) -> None:
        await self.cache.close()


async def check_incident(
    kind: StatusTargetKind,
    principal: Principal,
    check: Check,
    result: CheckResult,
    *,
    firing: bool,
) -> None:
    """A check linked to a component opens an incident when it goes down (keyed by the check,
    as the `status` target keys Alertmanager's) and resolves it when it recovers."""
    if check.page is None or check.component is None:
        return
    wanted = IncidentInstruction(
        key=f"check:{check.name}",
        status="firing" if firing else "resolved",
        name=f"{check.name} is failing",
        impact=Impact.MAJOR,
        body=(
            f"The check of {check.url} failed {check.failures_to_open} times in a row: "
            f"{result.error}"
            if firing
            else f"The check of {check.url} passes again."
        ),
        components={check.component: ComponentStatus.MAJOR_OUTAGE} if firing else {},
    )
    await kind.incident(principal, check.page, wanted)


async def open_status_pages(context: CapabilityContext) -> StatusPagesOpened:
    await context.database.migrate(MIGRATIONS, version_table=VERSION_TABLE)
    platform = context.platform
    store = StatusStore(context.database.engine)
    publisher = Publisher(platform.ingest, platform.buses)
    pages = StatusPages(store, publisher)
    context.facades.offer_directory("Status pages", pages)
    checks = Checks(
        CheckStore(context.database.engine),
        pages,
        publisher,
        platform.tenants,
        context.outgoing,
    )
    domains = Domains(context.database.engine)
    if Role.GATEWAY in context.roles:
        await domains.load()  # before the first request, so a custom domain answers at once
        await asyncio.to_thread(render.prepare)  # the skeleton, ready within any budget
    incidents = Incidents(pages, store, publisher)
    maintenances = Maintenances(incidents)
    kind = StatusTargetKind(
        pages, incidents, platform.tenants, IncidentKeys(context.database.engine)
    )
    context.target_kinds.register(TYPE, kind)
    checks.on_down.append(functools.partial(check_incident, kind, firing=True))
    checks.on_up.append(functools.partial(check_incident, kind, firing=False))
    access = Access(
        AccessStore(context.database.engine),
        pages,
        publisher,
        context.key,
        Attempts(DatabaseLimits(context.database.engine)),
    )

    async def forget_logins(principal: Principal, page: str) -> None:
        await access.forget_page(principal.tenant_id, page)

    pages.on_delete.append(forget_logins)
    settings = context.settings
    subscriber_store = SubscriberStore(context.database.engine)
    subscribers = Subscribers(
        subscriber_store,
        pages,
        platform,
        context.outgoing,
        context.key,
        mail=settings.smtp_url is not None,
    )
    pages.on_delete.append(subscribers.forget_page)
    duties = {
        Role.GATEWAY: [Duty("status-domains", domains.run, domains.stop, ends=True)],
        Role.SCHEDULER: [
            context.singleton("status-checks", checks.run),
            # Maintenance begins and completes on time in one process of the deployment.
            context.singleton(ACTOR, lambda: maintenances.follow(platform.tenants.acting)),
        ],
    }
    if settings.smtp_url is not None:
        notifier = Notifier(
            subscriber_store,
            platform.tail,
            platform.tenants,
            pages,
            Mailer(settings.smtp_url, settings.smtp_from),
            subscribers.unsubscribe_url,
        )
        subscribers.queued = notifier.wake
        duties[Role.SCHEDULER].append(context.singleton("status-subscribers", notifier.run))
    cache = PageCache(
        platform,
        context.metrics,
        redis_url=context.settings.redis_url,
        on_page_changed=domains.reload,
    )
    opened = StatusPagesOpened(
        pages=pages,
        incidents=incidents,
        maintenances=maintenances,
        checks=checks,
        domains=domains,
        access=access,
        subscribers=subscribers,
        duties=duties,
        cache=cache,
    )
    from stellwerk.statuspages.public import renderers  # public.py builds on this module

    for variant, renderer in renderers(opened).items():
        cache.register(variant, renderer)
    if cache.l2 is not None:
        updater = ContentUpdater(platform, CursorStore(context.database.engine), cache)
        duties[Role.SCHEDULER].append(context.singleton("status-content-updater", updater.run))
    return opened

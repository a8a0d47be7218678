"""The public side's one way to a page: every public handler (pages, JSON, feeds) resolves the
page it serves through `resolve`, so that who may see what is decided in one place.

Public addresses are `/status/{page}/...`; page names are unique across tenants. The HTML pages
(the page, one per incident, the history) are here too; an unknown page is an HTML 404.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from stellwerk.api import capability_of
from stellwerk.clock import utc_now
from stellwerk.ops import NotReadyError
from stellwerk.refs import TenantId
from stellwerk.service import NotFound
from stellwerk.statuspages.access import cookie_name
from stellwerk.statuspages.cache import (
    PRIVATE_CACHE_CONTROL,
    PUBLIC_CACHE_CONTROL,
    Entry,
    Key,
    Rendered,
    Renderer,
    etag_matches,
)
from stellwerk.statuspages.domains import base_of
from stellwerk.statuspages.latency import Latency, daily_latency, hour_shift
from stellwerk.statuspages.model import Page, StatusChange, Visibility
from stellwerk.statuspages.opened import NAME, StatusPagesOpened
from stellwerk.statuspages.render import (
    names_of,
    render_history,
    render_incident,
    render_not_found,
    render_page_of_history,
    render_skeleton,
)
from stellwerk.statuspages.routes_access import login_required
from stellwerk.statuspages.uptime import window
from stellwerk.statuspages.views import PageView, incident_view, page_view


@dataclass(frozen=True, slots=True)
class Viewing:
    """A page as one reader may see it. `audience`: the audience whose components the reader
    sees (None: the whole page, as every reader of a public page does), `components` those
    components (None: all). Caches key by (page, audience), never by person; a page that is
    not `public` is never answered with a shared cache's Cache-Control."""

    tenant_id: TenantId
    page: Page
    audience: str | None = None
    components: frozenset[str] | None = None

    @property
    def public(self) -> bool:
        return self.page.visibility is Visibility.PUBLIC


def opened_of(request: Request) -> StatusPagesOpened:
    return capability_of(request, NAME, StatusPagesOpened)


async def resolve(request: Request) -> Viewing:
    """The page of the request's `page` path parameter as this reader may see it; `NotFound`
    for an unknown page. A private or audience page without a valid session is refused:
    HTML is redirected to the login form, JSON and feeds get 401 (`login_required`)."""
    name = request.path_params["page"]
    opened = opened_of(request)
    tenant_id, page = await opened.cache.find_page(name, opened.pages.public_page)
    if page.visibility is Visibility.PUBLIC:
        return Viewing(tenant_id, page)
    admitted = await opened.access.admitted(tenant_id, page, request.cookies.get(cookie_name(name)))
    if admitted is None:
        raise login_required(request, name)
    return Viewing(tenant_id, page, admitted.audience, admitted.components)


# The public HTML pages.


async def page_data(
    opened: StatusPagesOpened, viewing: Viewing, now: datetime
) -> tuple[PageView, list[StatusChange]]:
    """What the page shows: its view and the status history its uptime bars are computed
    from (`render_page_of_history` computes them, off the event loop)."""
    page = viewing.page
    view = await page_view(
        opened.pages.store, viewing.tenant_id, page, now=now, components=viewing.components
    )
    start, _dates = window(now, page.time_zone)
    return view, await opened.pages.history(viewing.tenant_id, page.name, start)


async def latency_data(
    opened: StatusPagesOpened, viewing: Viewing, view: PageView, now: datetime
) -> dict[str, Latency]:
    """The daily response times of the view's components that a check measures, over the
    uptime bars' window."""
    page = viewing.page
    start, dates = window(now, page.time_zone)
    found = await opened.checks.store.hourly_latency(
        viewing.tenant_id, page.name, start, hour_shift(page.time_zone, now)
    )
    shown = {c.id for c in view.components}
    return {
        component: daily_latency(component, check, hours, dates, page.time_zone)
        for component, (check, hours) in found.items()
        if component in shown
    }


HTML = "text/html; charset=utf-8"


def html(body: bytes, status_code: int = 200) -> Response:
    return Response(body, status_code, media_type=HTML)


def not_found() -> Response:
    return html(render_not_found(), 404)


async def not_found_app(scope: Scope, receive: Receive, send: Send) -> None:
    await not_found()(scope, receive, send)


def respond(request: Request, entry: Entry, viewing: Viewing) -> Response:
    """`entry` as the answer, or 304 when the reader has it (If-None-Match)."""
    if entry.as_of < 0:  # the skeleton: never kept by anyone
        cache_control = "no-store"
    elif viewing.page.visibility is Visibility.PUBLIC and viewing.audience is None:
        cache_control = PUBLIC_CACHE_CONTROL
    else:
        cache_control = PRIVATE_CACHE_CONTROL
    headers = {"Cache-Control": cache_control}
    if entry.as_of >= 0 and entry.status_code == 200:
        headers["ETag"] = entry.etag
        if etag_matches(request.headers.get("if-none-match"), entry.etag):
            return Response(status_code=304, headers=headers)
    return Response(entry.body, entry.status_code, headers=headers, media_type=entry.content_type)


async def _serve(request: Request, variant: tuple[str, ...], *, skeleton: bool = False) -> Response:
    arrived = time.monotonic()  # the render budget counts from here: it is the reader's wait
    try:
        viewing = await resolve(request)
    except NotFound:
        return not_found()
    opened = opened_of(request)
    page, base = viewing.page, variant[1]
    key = Key(viewing.tenant_id, page.name, variant, viewing.audience)
    shell = (lambda: Rendered(render_skeleton(page, base=base), HTML)) if skeleton else None
    return respond(request, await opened.cache.get(key, skeleton=shell, since=arrived), viewing)


async def status_page(request: Request) -> Response:
    base = base_of(request, request.path_params["page"])
    return await _serve(request, ("page", base), skeleton=True)


async def incident_page(request: Request) -> Response:
    base = base_of(request, request.path_params["page"])
    return await _serve(request, ("incident", base, request.path_params["incident"]))


async def history_page(request: Request) -> Response:
    base = base_of(request, request.path_params["page"])
    return await _serve(request, ("history", base))


def renderers(opened: StatusPagesOpened) -> dict[str, Renderer]:
    """How the cache renders each kind of HTML page from its key, in a worker thread so that
    a large page does not hold up the event loop (and the reader its budget)."""

    async def page_of(key: Key) -> Viewing | None:
        """The page of `key` as its audience sees it (None: the page or the audience is gone)."""
        try:
            page = await opened.pages.page(key.tenant_id, key.page)
        except NotFound:
            return None
        if key.audience is None:
            return Viewing(key.tenant_id, page)
        audience = await opened.access.store.get(key.tenant_id, key.page, key.audience)
        if audience is None:
            return None
        return Viewing(key.tenant_id, page, key.audience, frozenset(audience.components or ()))

    async def page(key: Key) -> Rendered:
        viewing = await page_of(key)
        if viewing is None:
            return Rendered(render_not_found(), HTML, 404)
        now = utc_now()
        view, history = await page_data(opened, viewing, now)
        latency = await latency_data(opened, viewing, view, now)
        body = await asyncio.to_thread(
            render_page_of_history, view, history, base=key.variant[1], now=now, latency=latency
        )
        return Rendered(body, HTML)

    async def incident(key: Key) -> Rendered:
        viewing = await page_of(key)
        store = opened.pages.store
        found = (
            await incident_view(
                store,
                key.tenant_id,
                viewing.page,
                key.variant[2],
                components=viewing.components,
            )
            if viewing is not None
            else None
        )
        if viewing is None or found is None:
            return Rendered(render_not_found(), HTML, 404)
        names = names_of(await store.list_components(key.tenant_id, key.page))
        body = render_incident(viewing.page, found, base=key.variant[1], names=names)
        return Rendered(body, HTML)

    async def history(key: Key) -> Rendered:
        viewing = await page_of(key)
        if viewing is None:
            return Rendered(render_not_found(), HTML, 404)
        view = await page_view(
            opened.pages.store,
            key.tenant_id,
            viewing.page,
            now=utc_now(),
            components=viewing.components,
        )
        return Rendered(render_history(view, base=key.variant[1]), HTML)

    return {"page": page, "incident": incident, "history": history}


def domain_pages(scope: Scope) -> Mapping[str, str] | None:
    """The custom domains of the process answering, or None while it is not ready."""
    try:
        opened = scope["app"].state.lifecycle.services.capabilities[NAME]
    except (KeyError, AttributeError, NotReadyError):
        return None
    return opened.domains.pages if isinstance(opened, StatusPagesOpened) else None


ROUTES: list[BaseRoute] = [
    Route("/status/{page}", status_page, methods=["GET", "HEAD"]),
    Route("/status/{page}/history", history_page, methods=["GET", "HEAD"]),
    Route("/status/{page}/incidents/{incident}", incident_page, methods=["GET", "HEAD"]),
]

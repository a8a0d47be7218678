"""The tenant's own things: API keys (created and shown once, revoked), connections (never
their secrets), schemas, a bus's failed events with resubmit, and global endpoints when the
capability that keeps them is mounted."""

from __future__ import annotations

from typing import Final

from starlette.responses import Response

from stellwerk.console.routes_buses import pretty
from stellwerk.console.web import PREFIX, BadForm, View, page, slug
from stellwerk.service import FailedEventFilter, Forbidden, KeyInput, NotFound

FAILED_PAGE: Final = 50


def _admin_only(view: View) -> None:
    # Keys are the tenant's keys to everything: only an admin key lists them, as the API does.
    if not view.can_write:
        raise Forbidden("only an admin key may see the tenant's keys")


@page
async def keys(view: View) -> Response:
    _admin_only(view)
    found = await view.platform.keys.all(view.principal.tenant_id)
    return view.render("keys.html", keys=found, created=None)


@page
async def create_key(view: View) -> Response:
    scope = await view.field("scope")
    if scope not in ("ingest", "read", "admin"):
        raise BadForm("the scope is one of ingest, read, admin", field="scope")
    description = (await view.field("description", default="")).strip()
    created = await view.platform.keys.create(
        view.principal.tenant_id,
        KeyInput(scope=scope, description=description),  # type: ignore[arg-type]
    )
    found = await view.platform.keys.all(view.principal.tenant_id)
    # The key is on this page once: it is not stored, only its hash (no redirect, no cache).
    return view.render("keys.html", keys=found, created=created)


@page
async def revoke_key(view: View) -> Response:
    await view.form()
    await view.platform.keys.revoke(view.principal.tenant_id, view.param("key"))
    return view.redirect(f"{PREFIX}/keys")


@page
async def connections(view: View) -> Response:
    found = await view.platform.connections.all(view.principal)
    return view.render("connections.html", connections=[(c, pretty(c.connection)) for c in found])


@page
async def schemas(view: View) -> Response:
    found = await view.platform.schemas.latest(view.principal)
    return view.render("schemas.html", schemas=[(s, pretty(s.schema)) for s in found])


@page
async def failed_events(view: View) -> Response:
    bus = view.param("bus")
    after_text = view.request.query_params.get("after", "0")
    if not after_text.isdigit():
        raise BadForm("after must be a failed event's id", field="after")
    found = await view.platform.failed_events.find(
        view.principal, bus, FailedEventFilter(), after=int(after_text), limit=FAILED_PAGE
    )
    return view.render(
        "failed_events.html",
        bus=bus,
        failed=[(f, pretty(f.event)) for f in found],
        next_after=found[-1].id if len(found) == FAILED_PAGE else None,
        outcome=view.request.query_params.get("resubmitted"),
    )


@page
async def resubmit(view: View) -> Response:
    bus = view.param("bus")
    form = await view.form()
    chosen = form.getlist("id")
    if not all(i.isdigit() for i in chosen):
        raise BadForm("a failed event's id is a number", field="id")
    ids = None if form.get("all") == "1" else [int(i) for i in chosen]
    if ids == []:
        raise BadForm("choose the failed events to resubmit, or resubmit all", field="id")
    result = await view.platform.failed_events.resubmit(view.principal, bus, ids)
    return view.redirect(
        f"{PREFIX}/buses/{bus}/failed-events?resubmitted={result.resubmitted}"
        f"-{result.still_failing}"
    )


@page
async def section(view: View) -> Response:
    """What another capability lists of the tenant's things (status pages, tracking sources)."""
    wanted = view.param("section")
    for title, directory in view.console.facades.directories.items():
        if slug(title) == wanted:
            found = await directory.listing(view.principal)
            return view.render("section.html", title=title, listed=found)
    raise NotFound(f"section {wanted!r} is not part of this deployment")


@page
async def endpoints(view: View) -> Response:
    facade = view.console.facades.global_endpoints
    if facade is None:
        raise NotFound("global endpoints are not part of this deployment")
    return view.render("endpoints.html", endpoints=await facade.all(view.principal))

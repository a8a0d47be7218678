"""Statuspage's public v2 JSON (`/status/{page}/api/v2/...`), so that existing Statuspage
consumers (widgets, monitors, chat integrations) read our pages unchanged.

`render(view, document, url)` is a pure function of a `PageView`: the caches can keep its bytes.
Shapes follow Statuspage's documented ones field for field. Where our model has less, the gaps
are filled as Statuspage fills them for a page that does not use the feature: component groups
become group components (`group: true`, their members' ids in `components`, each member's
`group_id` pointing at them); `shortlink`, tweets and postmortems are null; an update's
`old_status` of a component is its status in the update before (operational at first). Times
are ISO 8601 with the page time zone's offset, to the millisecond, as Statuspage writes them.
"""

from __future__ import annotations

import hashlib
import zoneinfo
from collections.abc import Callable, Sequence
from datetime import datetime, tzinfo
from typing import Any, Final

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from stellwerk.clock import utc_now
from stellwerk.statuspages.cache import PRIVATE_CACHE_CONTROL
from stellwerk.statuspages.latency import Latency
from stellwerk.statuspages.model import (
    Component,
    ComponentStatus,
    Incident,
    IncidentUpdate,
)
from stellwerk.statuspages.public import latency_data, opened_of, resolve
from stellwerk.statuspages.views import HISTORY_LIMIT, PageView, page_view

CACHE_CONTROL: Final = "public, max-age=5, stale-while-revalidate=60"
_encoder = msgspec.json.Encoder()
_SEVERITY: Final = [
    ComponentStatus.OPERATIONAL,
    ComponentStatus.UNDER_MAINTENANCE,
    ComponentStatus.DEGRADED_PERFORMANCE,
    ComponentStatus.PARTIAL_OUTAGE,
    ComponentStatus.MAJOR_OUTAGE,
]


class _Times:
    """ISO 8601 in the page's time zone, with its offset."""

    def __init__(self, time_zone: str) -> None:
        try:
            self._zone: tzinfo = zoneinfo.ZoneInfo(time_zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            self._zone = zoneinfo.ZoneInfo("UTC")

    def __call__(self, moment: datetime | None) -> str | None:
        if moment is None:
            return None
        return moment.astimezone(self._zone).isoformat(timespec="milliseconds")

    def date(self, moment: datetime) -> str:
        return moment.astimezone(self._zone).date().isoformat()


def group_id(page: str, group: str) -> str:
    """A stable id for a component group (Statuspage models groups as components)."""
    return hashlib.blake2b(f"{page}\0{group}".encode(), digest_size=6).hexdigest()


def _page(view: PageView, url: str, at: _Times) -> dict[str, Any]:
    page = view.page
    return {
        "id": page.name,
        "name": page.title,
        "url": url,
        "time_zone": page.time_zone,
        "updated_at": at(view.updated_at),
    }


def _status(view: PageView) -> dict[str, Any]:
    return {"indicator": str(view.indicator), "description": view.description}


def _components(
    view: PageView, at: _Times, latency: dict[str, Latency] | None = None
) -> list[dict[str, Any]]:
    """Components in display order, each group as a component before its members; with
    `latency`, a component a check measures carries `stellwerk_latency` (our extension)."""
    page = view.page.name
    members: dict[str, list[Component]] = {}
    for component in view.components:
        if component.group is not None:
            members.setdefault(component.group, []).append(component)
    out: list[dict[str, Any]] = []
    for component in view.components:
        group = component.group
        if group is not None and component is members[group][0]:
            inside = members[group]
            out.append(
                {
                    "id": group_id(page, group),
                    "name": group,
                    "status": str(max((c.status for c in inside), key=_SEVERITY.index)),
                    "created_at": at(min(c.created_at for c in inside)),
                    "updated_at": at(max(c.updated_at for c in inside)),
                    "position": len(out) + 1,
                    "description": None,
                    "showcase": False,
                    "start_date": None,
                    "group_id": None,
                    "page_id": page,
                    "group": True,
                    "only_show_if_degraded": False,
                    "components": [c.id for c in inside],
                }
            )
        shown = {**_component_of(page, component, at), "position": len(out) + 1}
        measured = (latency or {}).get(component.id)
        if measured is not None:
            shown["stellwerk_latency"] = _latency(measured)
        out.append(shown)
    return out


def _latency(latency: Latency) -> dict[str, Any]:
    """The extension field: the check that measures the component and its days with passing
    results (local dates of the page's time zone, as the uptime bars count them)."""
    return {
        "check": latency.check,
        "days": [
            {
                "date": day.date.isoformat(),
                "count": day.count,
                "mean_ms": round(day.mean_ms, 3),
                "max_ms": round(day.max_ms or 0.0, 3),
            }
            for day in latency.days
            if day.mean_ms is not None
        ],
    }


def _incident(view: PageView, incident: Incident, at: _Times) -> dict[str, Any]:
    page = view.page.name
    by_id = {c.id: c for c in view.components}
    oldest_first = list(reversed(incident.updates))
    was: dict[str, str] = {}
    updates = []
    for update in oldest_first:
        updates.append(_update(incident, update, by_id, was, at))
    monitoring = next(
        (u.created_at for u in oldest_first if u.status == "monitoring"),
        None,
    )
    described: dict[str, Any] = {
        "id": incident.id,
        "name": incident.name,
        "status": str(incident.status),
        "created_at": at(incident.created_at),
        "updated_at": at(incident.updated_at),
        "monitoring_at": at(monitoring),
        "resolved_at": at(incident.resolved_at),
        "impact": str(incident.impact),
        "shortlink": None,
        "started_at": at(incident.scheduled_for or incident.created_at),
        "page_id": page,
        "incident_updates": list(reversed(updates)),
        "components": [
            _component_of(page, by_id[c], at) for c in incident.components if c in by_id
        ],
    }
    if incident.is_maintenance:
        described["scheduled_for"] = at(incident.scheduled_for)
        described["scheduled_until"] = at(incident.scheduled_until)
    return described


def _update(
    incident: Incident,
    update: IncidentUpdate,
    by_id: dict[str, Component],
    was: dict[str, str],
    at: _Times,
) -> dict[str, Any]:
    affected = []
    for change in update.affected:
        known = by_id.get(change.component)
        old = was.get(change.component, str(ComponentStatus.OPERATIONAL))
        was[change.component] = str(change.status)
        affected.append(
            {
                "code": change.component,
                "name": known.name if known is not None else change.component,
                "old_status": old,
                "new_status": str(change.status),
            }
        )
    return {
        "id": update.id,
        "status": str(update.status),
        "body": update.body,
        "incident_id": incident.id,
        "created_at": at(update.created_at),
        "updated_at": at(update.created_at),
        "display_at": at(update.created_at),
        "affected_components": affected or None,
        "deliver_notifications": True,
        "custom_tweet": None,
        "tweet_id": None,
    }


def _component_of(page: str, component: Component, at: _Times) -> dict[str, Any]:
    return {
        "id": component.id,
        "name": component.name,
        "status": str(component.status),
        "created_at": at(component.created_at),
        "updated_at": at(component.updated_at),
        "position": component.position,
        "description": component.description or None,
        "showcase": True,
        "start_date": at.date(component.created_at),
        "group_id": None if component.group is None else group_id(page, component.group),
        "page_id": page,
        "group": False,
        "only_show_if_degraded": component.only_show_if_degraded,
    }


def _incidents(view: PageView, found: Sequence[Incident], at: _Times) -> list[dict[str, Any]]:
    return [_incident(view, i, at) for i in found]


def _newest(*lists: Sequence[Incident]) -> list[Incident]:
    """The incidents of `lists`, each once, newest first, at most `HISTORY_LIMIT`."""
    unique = {i.id: i for found in lists for i in found}
    ordered = sorted(unique.values(), key=lambda i: (i.created_at, i.id), reverse=True)
    return ordered[:HISTORY_LIMIT]


def _document(
    name: str, view: PageView, url: str, latency: dict[str, Latency] | None
) -> dict[str, Any]:
    at = _Times(view.page.time_zone)
    page = {"page": _page(view, url, at)}
    maintenances = view.upcoming_maintenance + view.active_maintenance
    if name == "summary.json":
        return {
            **page,
            "components": _components(view, at),
            "incidents": _incidents(view, view.unresolved, at),
            "scheduled_maintenances": _incidents(view, maintenances, at),
            "status": _status(view),
        }
    if name == "status.json":
        return {**page, "status": _status(view)}
    if name == "components.json":
        return {**page, "components": _components(view, at, latency)}
    if name == "incidents.json":
        return {**page, "incidents": _incidents(view, _newest(view.unresolved, view.history), at)}
    if name == "incidents/unresolved.json":
        return {**page, "incidents": _incidents(view, view.unresolved, at)}
    if name == "scheduled-maintenances.json":
        every = _newest(maintenances, view.maintenance_history)
        return {**page, "scheduled_maintenances": _incidents(view, every, at)}
    if name == "scheduled-maintenances/upcoming.json":
        return {**page, "scheduled_maintenances": _incidents(view, view.upcoming_maintenance, at)}
    if name == "scheduled-maintenances/active.json":
        return {**page, "scheduled_maintenances": _incidents(view, view.active_maintenance, at)}
    raise KeyError(name)


DOCUMENTS: Final = (
    "summary.json",
    "status.json",
    "components.json",
    "incidents.json",
    "incidents/unresolved.json",
    "scheduled-maintenances.json",
    "scheduled-maintenances/upcoming.json",
    "scheduled-maintenances/active.json",
)


def render(
    view: PageView, document: str, url: str, latency: dict[str, Latency] | None = None
) -> bytes:
    """The JSON of `document` (one of `DOCUMENTS`) for `view`; `url` is the page's public
    address as its readers reach it. `latency` goes into `components.json` only: the summary,
    which widgets poll, stays as small as Statuspage's."""
    return _encoder.encode(_document(document, view, url, latency))


def etag_of(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def page_url(request: Request, view_domains: Sequence[str], page: str) -> str:
    """The page's public address: its first custom domain, else /status/{page} here."""
    if view_domains:
        return f"https://{view_domains[0]}"
    return str(request.base_url).rstrip("/") + f"/status/{page}"


def cached_answer(
    request: Request, body: bytes, media_type: str, *, public: bool = True
) -> Response:
    """`body` with its ETag and caching headers, or 304 when the reader has it already. What
    is not `public` (a private or audience page's) is for this reader only: no shared cache
    keeps it, and no other site's script reads it."""
    etag = etag_of(body)
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL if public else PRIVATE_CACHE_CONTROL}
    if public:
        headers["Access-Control-Allow-Origin"] = "*"  # Statuspage's widgets read it from anywhere
    wanted = request.headers.get("if-none-match", "")
    if etag in (tag.strip() for tag in wanted.split(",")) or wanted.strip() == "*":
        return Response(status_code=304, headers=headers)
    return Response(body, headers=headers, media_type=media_type)


def _handler(document: str) -> Callable[[Request], Any]:
    async def serve(request: Request) -> Response:
        viewing = await resolve(request)
        opened, now = opened_of(request), utc_now()
        view = await page_view(
            opened.pages.store,
            viewing.tenant_id,
            viewing.page,
            now=now,
            components=viewing.components,
        )
        url = page_url(request, viewing.page.domains, viewing.page.name)
        latency = (
            await latency_data(opened, viewing, view, now)
            if document == "components.json"
            else None
        )
        body = render(view, document, url, latency)
        return cached_answer(request, body, "application/json", public=viewing.public)

    return serve


ROUTES: Final = [
    Route(f"/status/{{page}}/api/v2/{document}", _handler(document), methods=["GET", "HEAD"])
    for document in DOCUMENTS
]

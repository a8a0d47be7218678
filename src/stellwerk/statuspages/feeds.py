"""A page's history as feeds: `/status/{page}/history.atom` (Atom 1.0) and `history.rss`
(RSS 2.0), one entry per incident or maintenance, newest change first.

Like the JSON, each feed is a pure function of a `PageView`. The XML is built with ElementTree,
which escapes every text, so a hostile incident name stays text; entry content is the updates'
Markdown rendered with HTML escaped (`bodies.render_body`), carried as escaped HTML.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from stellwerk.clock import utc_now
from stellwerk.statuspages.bodies import render_body
from stellwerk.statuspages.model import Incident
from stellwerk.statuspages.public import opened_of, resolve
from stellwerk.statuspages.statusapi import cached_answer, page_url
from stellwerk.statuspages.views import HISTORY_LIMIT, PageView, page_view

ATOM_NS: Final = "http://www.w3.org/2005/Atom"
ATOM_TYPE: Final = "application/atom+xml"
RSS_TYPE: Final = "application/rss+xml"


def entries(view: PageView) -> list[Incident]:
    """Every incident and maintenance the page shows, each once, last changed first."""
    every = {
        i.id: i
        for found in (
            view.unresolved,
            view.active_maintenance,
            view.upcoming_maintenance,
            view.history,
            view.maintenance_history,
        )
        for i in found
    }
    ordered = sorted(every.values(), key=lambda i: (i.updated_at, i.id), reverse=True)
    return ordered[:HISTORY_LIMIT]


def incident_url(url: str, incident: Incident) -> str:
    return f"{url}/incidents/{incident.id}"


def content_html(incident: Incident) -> str:
    """The updates, newest first, as Statuspage's feeds show them: time, status, body."""
    parts = []
    for update in incident.updates:
        status = str(update.status).replace("_", " ").capitalize()
        parts.append(
            f"<p><small>{_iso(update.created_at)}</small><br><strong>{status}</strong></p>"
            + str(render_body(update.body))
        )
    return "\n".join(parts)


def atom(view: PageView, url: str) -> bytes:
    ET.register_namespace("", ATOM_NS)

    def el(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
        child = ET.SubElement(parent, f"{{{ATOM_NS}}}{tag}", attrs)
        child.text = text
        return child

    feed = ET.Element(f"{{{ATOM_NS}}}feed")
    el(feed, "id", f"{url}/history")
    el(feed, "title", f"{view.page.title} status history")
    el(feed, "updated", _iso(view.updated_at))
    el(feed, "link", rel="alternate", type="text/html", href=url)
    el(feed, "link", rel="self", type=ATOM_TYPE, href=f"{url}/history.atom")
    author = el(feed, "author")
    el(author, "name", view.page.title)
    for incident in entries(view):
        entry = el(feed, "entry")
        el(entry, "id", incident_url(url, incident))
        el(entry, "title", incident.name)
        el(entry, "published", _iso(incident.created_at))
        el(entry, "updated", _iso(incident.updated_at))
        el(entry, "link", rel="alternate", type="text/html", href=incident_url(url, incident))
        el(entry, "content", content_html(incident), type="html")
    return _document(feed)


def rss(view: PageView, url: str) -> bytes:
    def el(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
        child = ET.SubElement(parent, tag, attrs)
        child.text = text
        return child

    root = ET.Element("rss", {"version": "2.0"})
    channel = el(root, "channel")
    el(channel, "title", f"{view.page.title} status history")
    el(channel, "link", url)
    el(channel, "description", f"Incidents and maintenance of {view.page.title}")
    el(channel, "lastBuildDate", _rfc822(view.updated_at))
    for incident in entries(view):
        item = el(channel, "item")
        el(item, "title", incident.name)
        el(item, "link", incident_url(url, incident))
        el(item, "guid", incident_url(url, incident), isPermaLink="true")
        el(item, "pubDate", _rfc822(incident.created_at))
        el(item, "description", content_html(incident))
    return _document(root)


def _document(root: ET.Element) -> bytes:
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return body


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _rfc822(moment: datetime) -> str:
    return format_datetime(moment.astimezone(UTC), usegmt=True)


def _handler(render: Callable[[PageView, str], bytes], media_type: str) -> Callable[..., Any]:
    async def serve(request: Request) -> Response:
        viewing = await resolve(request)
        view = await page_view(
            opened_of(request).pages.store,
            viewing.tenant_id,
            viewing.page,
            now=utc_now(),
            components=viewing.components,
        )
        url = page_url(request, viewing.page.domains, viewing.page.name)
        return cached_answer(request, render(view, url), media_type, public=viewing.public)

    return serve


ROUTES: Final = [
    Route("/status/{page}/history.atom", _handler(atom, ATOM_TYPE), methods=["GET", "HEAD"]),
    Route("/status/{page}/history.rss", _handler(rss, RSS_TYPE), methods=["GET", "HEAD"]),
]

"""Archives of a bus (list, create, delete) and replays with live progress bars (start, cancel,
and the progress the page's script polls)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from starlette.responses import JSONResponse, Response

from stellwerk.console.routes_buses import pretty
from stellwerk.console.web import PREFIX, SECURITY_HEADERS, BadForm, View, page
from stellwerk.events import format_rfc3339
from stellwerk.service import ArchiveInput, InvalidRequest, ReplayInput


def _convert(body: dict[str, Any], kind: type[Any]) -> Any:
    try:
        return msgspec.convert(body, kind)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"the form is not valid: {exc}") from None


@page
async def archives(view: View) -> Response:
    bus = view.param("bus")
    found = await view.platform.archives.all(view.principal, bus)
    return view.render(
        "archives.html",
        bus=bus,
        archives=[(a, pretty(a.pattern) if a.pattern else "") for a in found],
    )


@page
async def create_archive(view: View) -> Response:
    bus = view.param("bus")
    name = (await view.field("name")).strip()
    pattern_text = (await view.field("pattern", default="")).strip()
    days = (await view.field("retention_days", default="0")).strip() or "0"
    if not days.isdigit():
        raise BadForm("retention days must be a whole number (0: forever)", field="retention_days")
    try:
        pattern = msgspec.json.decode(pattern_text) if pattern_text else None
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"the pattern is not JSON: {exc}", field="pattern") from None
    body = _convert({"pattern": pattern, "retention_days": int(days)}, ArchiveInput)
    await view.platform.archives.put(view.principal, bus, name, body)
    return view.redirect(f"{PREFIX}/buses/{bus}/archives")


@page
async def delete_archive(view: View) -> Response:
    bus, name = view.param("bus"), view.param("archive")
    await view.form()
    await view.platform.archives.delete(view.principal, bus, name)
    return view.redirect(f"{PREFIX}/buses/{bus}/archives")


@page
async def replays(view: View) -> Response:
    found = await view.platform.replays.all(view.principal, None)
    found.sort(key=lambda r: r.created_at, reverse=True)
    buses = await view.platform.buses.all(view.principal)
    archive_names = [
        (b.name, a.name)
        for b in buses
        for a in await view.platform.archives.all(view.principal, b.name)
    ]
    now = datetime.now(UTC).replace(microsecond=0)
    return view.render(
        "replays.html",
        replays=found,
        archives=archive_names,
        start=format_rfc3339(now - timedelta(hours=1)),
        end=format_rfc3339(now),
    )


@page
async def start_replay(view: View) -> Response:
    archive_of = (await view.field("archive")).split("/", 1)
    if len(archive_of) != 2:
        raise BadForm("choose an archive", field="archive")
    body = {
        "name": (await view.field("name")).strip(),
        "bus": archive_of[0],
        "archive": archive_of[1],
        "start": (await view.field("start")).strip(),
        "end": (await view.field("end")).strip(),
    }
    await view.platform.replays.start(view.principal, _convert(body, ReplayInput))
    return view.redirect(f"{PREFIX}/replays")


@page
async def cancel_replay(view: View) -> Response:
    await view.form()
    await view.platform.replays.cancel(view.principal, view.param("replay"))
    return view.redirect(f"{PREFIX}/replays")


@page
async def replay_progress(view: View) -> Response:
    """What a replay's progress bar shows, for the page's script to poll."""
    replay = await view.platform.replays.get(view.principal, view.param("replay"))
    return JSONResponse(
        {"state": replay.state, "replayed": replay.replayed, "total": replay.total},
        headers=SECURITY_HEADERS,
    )

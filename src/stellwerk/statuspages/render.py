"""Public pages as HTML: Jinja2 templates, autoescaped, over a `PageView` and its uptime.

Every function here is pure (a view in, bytes out), so the cache can render in a worker thread
and keep what it rendered. `base` is where the page lives: `/status/{page}`, or `` on a custom
domain, so that links work at either address. CSS and the skeleton's script are inlined: a page
is one response, served from the cache in one piece.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from itertools import groupby
from pathlib import Path
from typing import Any, Final

import jinja2
from markdown_it import MarkdownIt
from markupsafe import Markup

from stellwerk.statuspages.latency import Latency
from stellwerk.statuspages.model import (
    Component,
    ComponentStatus,
    Impact,
    Incident,
    IncidentStatus,
    Page,
    StatusChange,
)
from stellwerk.statuspages.uptime import Day, Uptime, daily_uptime
from stellwerk.statuspages.views import PageView

HERE: Final = Path(__file__).parent
STATUS_LABELS: Final = {
    ComponentStatus.OPERATIONAL: "Operational",
    ComponentStatus.DEGRADED_PERFORMANCE: "Degraded performance",
    ComponentStatus.PARTIAL_OUTAGE: "Partial outage",
    ComponentStatus.MAJOR_OUTAGE: "Major outage",
    ComponentStatus.UNDER_MAINTENANCE: "Under maintenance",
}
INCIDENT_LABELS: Final = {s: s.value.replace("_", " ").capitalize() for s in IncidentStatus}
IMPACT_LABELS: Final = {
    Impact.NONE: "No impact",
    Impact.MINOR: "Minor impact",
    Impact.MAJOR: "Major impact",
    Impact.CRITICAL: "Critical impact",
    Impact.MAINTENANCE: "Maintenance",
}
RECENT_INCIDENTS: Final = 10  # closed incidents the page itself shows; the rest on /history
CHART_HEIGHT: Final = 40  # the latency chart's box is one unit wide a day, this high

_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")
_HTTP_URL = re.compile(r"^https?://[^\s\"'<>]+$")
# Raw HTML in a body comes out escaped (html off); markdown-it refuses script link schemes.
_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    # Our templates change only with the package: without this, every render stats each file.
    auto_reload=False,
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.globals.update(
    STATUS_LABELS=STATUS_LABELS,
    INCIDENT_LABELS=INCIDENT_LABELS,
    IMPACT_LABELS=IMPACT_LABELS,
    STYLE=Markup((HERE / "static" / "status.css").read_text()),  # noqa: S704 (our own file)
    SKELETON_SCRIPT=Markup((HERE / "static" / "skeleton.js").read_text()),  # noqa: S704
)


def render_body(markdown: str) -> Markup:
    """An incident update's Markdown as HTML that is safe to embed: every tag in it escaped."""
    return Markup(_markdown.render(markdown))  # noqa: S704 (html is off: the output is escaped)


@dataclass(frozen=True, slots=True)
class Run:
    """Days side by side in a component's uptime bar that look the same: a run of whole days
    of one status, or one day with something in it. `level` is the worst status or `none`."""

    first: date
    last: date
    days: int
    level: str
    share: float | None

    @property
    def label(self) -> str:
        when = _day(self.first) if self.days == 1 else f"{_day(self.first)} to {_day(self.last)}"
        if self.share is None:
            return f"{when}: no data"
        status = STATUS_LABELS[ComponentStatus(self.level)].lower()
        return f"{when}: {status}, {percent(self.share)} up"


@dataclass(frozen=True, slots=True)
class LatencyChart:
    """A component's response times as an inline SVG line: one step a day at the day's mean,
    in a box `days` wide and `CHART_HEIGHT` high whose top is `top_ms`; a day without a
    passing result breaks the line. `summary` says in words what it shows."""

    path: str
    days: int
    top_ms: float
    summary: str

    @property
    def top(self) -> str:
        return duration(self.top_ms)


@dataclass(frozen=True, slots=True)
class Shown:
    """A component as the page shows it: with its uptime bar and what the bar says, and its
    latency chart when a check measures it."""

    component: Component
    runs: list[Run]
    share: float | None
    bad_days: int
    latency: LatencyChart | None = None


def latency_chart(latency: Latency) -> LatencyChart | None:
    """The chart of `latency`; None before its check has passed once in the window."""
    known = [(i, d) for i, d in enumerate(latency.days) if d.mean_ms is not None]
    if not known:
        return None
    top = _nice(max(d.mean_ms for _, d in known if d.mean_ms is not None))
    # A step across each day's width: a lone day between days without data is a visible
    # dash, where a line through points would leave a lone point undrawn.
    parts: list[str] = []
    previous = -2
    for i, day in known:
        assert day.mean_ms is not None
        y = f"{CHART_HEIGHT - day.mean_ms / top * (CHART_HEIGHT - 2) - 1:.1f}"
        parts.append(f"V{y} H{i + 1}" if i == previous + 1 else f"M{i} {y} H{i + 1}")
        previous = i
    slowest = max((d for _, d in known), key=lambda d: d.mean_ms or 0.0)
    last = latency.days[-1]
    summary = (
        f"Response time over {len(latency.days)} days: {duration(latency.mean_ms or 0.0)} on "
        f"average, the slowest day {_day(slowest.date)} at {duration(slowest.mean_ms or 0.0)}"
    )
    if last.mean_ms is not None:
        summary += f", today {duration(last.mean_ms)}"
    return LatencyChart(" ".join(parts), len(latency.days), top, summary)


def duration(ms: float) -> str:
    """Milliseconds as people read a response time: `87 ms`, `1.25 s`."""
    return f"{ms:.0f} ms" if ms < 999.5 else f"{ms / 1000:.2f} s"


def _nice(ms: float) -> float:
    """The smallest of 1, 2 and 5 times a power of ten that is at least `ms` (a scale's top)."""
    scale = 1.0
    while True:
        for step in (1.0, 2.0, 5.0):
            if step * scale >= ms:
                return step * scale
        scale *= 10


def runs(days: Sequence[Day]) -> list[Run]:
    """A bar's runs: whole days of one status merge, a day with anything else stays alone,
    so that a quiet component's bar is a few elements rather than ninety. (The run under way
    is kept in locals and made once it ends: a page of 2,000 components has 180,000 days.)"""
    merged: list[Run] = []
    first = last = None
    count, level, share = 0, "", None  # the run under way, from `first` to `last`
    for day in days:
        worst = day.worst
        day_level = "none" if worst is None else worst.value
        day_share = day.share
        if (
            (day_share is None or day_share == 1.0)
            and last is not None
            and day_level == level
            and day_share == share
            and (day.date - last).days == 1
        ):
            last = day.date
            count += 1
            continue
        if first is not None and last is not None:
            merged.append(Run(first, last, count, level, share))
        first = last = day.date
        count, level, share = 1, day_level, day_share
    if first is not None and last is not None:
        merged.append(Run(first, last, count, level, share))
    return merged


def shown_components(
    view: PageView, uptime: dict[str, Uptime], latency: dict[str, Latency] | None = None
) -> list[tuple[str | None, list[Shown]]]:
    """The components to show, by group in display order: one that is only shown when
    degraded is left out while it is operational."""
    visible = [
        c
        for c in view.components
        if not (c.only_show_if_degraded and c.status is ComponentStatus.OPERATIONAL)
    ]
    grouped = []
    for group, members in groupby(visible, key=lambda c: c.group):
        shown = []
        for component in members:
            found = uptime.get(component.id)
            days = found.days if found is not None else ()
            measured = (latency or {}).get(component.id)
            shown.append(
                Shown(
                    component,
                    runs(days),
                    found.share if found is not None else None,
                    sum(1 for d in days if d.share is not None and d.share < 1.0),
                    latency_chart(measured) if measured is not None else None,
                )
            )
        grouped.append((group, shown))
    return grouped


def render_page_of_history(
    view: PageView,
    history: Sequence[StatusChange],
    *,
    base: str,
    now: datetime,
    latency: dict[str, Latency] | None = None,
) -> bytes:
    """The page, with the uptime bars computed from the status `history` (oldest first): both
    in one call, because for thousands of components the bars cost as much CPU as the HTML, and
    the cache runs this in a worker thread so that neither holds up the event loop."""
    shown = [c.id for c in view.components]
    uptime = daily_uptime(shown, history, now=now, time_zone=view.page.time_zone)
    return render_page(view, uptime, base=base, now=now, latency=latency)


def render_page(
    view: PageView,
    uptime: dict[str, Uptime],
    *,
    base: str,
    now: datetime,
    latency: dict[str, Latency] | None = None,
) -> bytes:
    """The page: banner, incidents, maintenance, components with their bars (and latency
    charts, for components a check measures), recent history."""
    recent = [i for i in view.history if i.closed][:RECENT_INCIDENTS]
    return _render(
        "page.html",
        view.page,
        base=base,
        view=view,
        groups=shown_components(view, uptime, latency),
        recent=recent,
        now=now,
        days=len(next(iter(uptime.values())).days) if uptime else 90,
    )


def render_incident(page: Page, incident: Incident, *, base: str, names: dict[str, str]) -> bytes:
    """One incident or maintenance with all its updates; `names`: component ids to names."""
    return _render("incident.html", page, base=base, incident=incident, names=names)


def render_history(view: PageView, *, base: str) -> bytes:
    """Every incident and maintenance of the view's history, by month, newest first."""
    months: list[tuple[str, list[Incident]]] = []
    for incident in view.history:
        month = _local(incident.created_at, view.page.time_zone).strftime("%B %Y")
        if months and months[-1][0] == month:
            months[-1][1].append(incident)
        else:
            months.append((month, [incident]))
    return _render("history.html", view.page, base=base, view=view, months=months)


def render_skeleton(page: Page, *, base: str) -> bytes:
    """The shell served at once while a page too large for its budget renders: it fills itself
    from `{base}/api/v2/summary.json`, and without JavaScript asks to be reloaded."""
    return _render("skeleton.html", page, base=base)


def prepare() -> None:
    """Compile the skeleton's templates now: compiled on first use, they took tens of
    milliseconds out of the first reader's render budget."""
    _env.get_template("skeleton.html")
    _env.get_template("base.html")


def render_not_found() -> bytes:
    return _env.get_template("not_found.html").render().encode()


def _render(template: str, page: Page, *, base: str, **values: Any) -> bytes:
    branding = page.branding
    accent = (
        branding.accent_color
        if branding.accent_color and _COLOUR.match(branding.accent_color)
        else None
    )
    logo = branding.logo_url if branding.logo_url and _HTTP_URL.match(branding.logo_url) else None
    zone = _zone(page.time_zone)
    return (
        _env.get_template(template)
        .render(
            page=page,
            base=base,
            accent=accent,
            logo=logo,
            when=lambda moment: _when(moment, zone),
            iso=lambda moment: moment.isoformat(),
            body=render_body,
            percent=percent,
            **values,
        )
        .encode()
    )


def percent(share: float) -> str:
    """A share as people read uptime: two decimals, never rounded up to 100 %."""
    hundredths = int(share * 10_000)
    return f"{hundredths // 100}.{hundredths % 100:02d} %"


def names_of(components: Iterable[Component]) -> dict[str, str]:
    return {c.id: c.name for c in components}


def _day(day: date) -> str:
    return f"{day.day} {day.strftime('%b %Y')}"


def _zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return zoneinfo.ZoneInfo("UTC")


def _local(moment: datetime, time_zone: str) -> datetime:
    return moment.astimezone(_zone(time_zone))


def _when(moment: datetime, zone: zoneinfo.ZoneInfo) -> str:
    local = moment.astimezone(zone)
    return f"{local.day} {local.strftime('%b %Y, %H:%M %Z')}"

"""Daily uptime per component, from its status history: what the 90-day bars show.

Each status a component took holds from its time until its next change (the last one until
now). Days are calendar days in the page's time zone, so a day may last 23 or 25 hours. Time
counts as up while the component is `operational` or `under_maintenance` (announced, planned
work); a day the component did not exist yet has no data. Pure functions, no I/O.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import msgspec

from stellwerk.clock import to_us
from stellwerk.statuspages.model import ComponentStatus, StatusChange

DAYS = 90

UP = frozenset({ComponentStatus.OPERATIONAL, ComponentStatus.UNDER_MAINTENANCE})

# Which status a day's bar takes: the worst the day saw.
_RANK = {
    ComponentStatus.OPERATIONAL: 0,
    ComponentStatus.UNDER_MAINTENANCE: 1,
    ComponentStatus.DEGRADED_PERFORMANCE: 2,
    ComponentStatus.PARTIAL_OUTAGE: 3,
    ComponentStatus.MAJOR_OUTAGE: 4,
}


class Day(msgspec.Struct, frozen=True, gc=False):
    """One calendar day of one component: seconds observed and seconds up, and the worst
    status it was in (None: it did not exist that day). A struct untracked by the garbage
    collector (it refers to no container, so it is in no cycle), not a frozen dataclass: a
    page of 2,000 components makes 180,000 of them, and a dataclass's frozen init took half
    the time of computing them."""

    date: date
    observed: float
    up: float
    worst: ComponentStatus | None

    @property
    def share(self) -> float | None:
        """The share of the observed time that was up; None without data."""
        return self.up / self.observed if self.observed > 0 else None


@dataclass(frozen=True, slots=True)
class Uptime:
    """A component's days, oldest first, and its uptime over all of them."""

    component: str
    days: tuple[Day, ...]

    @property
    def share(self) -> float | None:
        observed = sum(d.observed for d in self.days)
        return sum(d.up for d in self.days) / observed if observed > 0 else None


def window(now: datetime, time_zone: str, days: int = DAYS) -> tuple[datetime, list[date]]:
    """The start (local midnight `days - 1` days before today, as UTC) and the dates of the
    `days` days that end with today in `time_zone`: what to ask the history for."""
    zone = zoneinfo.ZoneInfo(time_zone)
    today = now.astimezone(zone).date()
    dates = [today - timedelta(days=days - 1 - i) for i in range(days)]
    return _midnight(dates[0], zone), dates


def daily_uptime(
    components: Iterable[str],
    changes: Sequence[StatusChange],
    *,
    now: datetime,
    time_zone: str,
    days: int = DAYS,
) -> dict[str, Uptime]:
    """Each of `components`' last `days` days up to `now`, in `time_zone`, from `changes`
    (oldest first, as `StatusPages.history` returns them; a change before the window gives the
    status the component entered it with)."""
    zone = zoneinfo.ZoneInfo(time_zone)
    _start, dates = window(now, time_zone, days)
    bounds = [_midnight(d, zone) for d in dates] + [_midnight(dates[-1] + timedelta(days=1), zone)]
    limits = [to_us(min(b, now)) for b in bounds]
    by_component: dict[str, list[StatusChange]] = {}
    for change in changes:
        by_component.setdefault(change.component, []).append(change)
    end = to_us(now)
    return {c: Uptime(c, _days(by_component.get(c, []), dates, limits, end)) for c in components}


def _days(
    changes: list[StatusChange], dates: list[date], bounds: list[int], now: int
) -> tuple[Day, ...]:
    # Segments [at, next at) with their status, the last until now; a sweep over days and
    # segments together, each visited once. Times are integer microseconds (exact, and a
    # fraction of datetime arithmetic's cost); seconds are made of them as
    # `timedelta.total_seconds` makes them.
    ats = [to_us(c.at) for c in changes]
    segments = [
        (ats[i], ats[i + 1] if i + 1 < len(ats) else now, c.status) for i, c in enumerate(changes)
    ]
    result: list[Day] = []
    first = 0
    count = len(segments)
    for i, day in enumerate(dates):
        begin, end = bounds[i], bounds[i + 1]
        observed = up = 0.0
        worst: ComponentStatus | None = None
        while first < count and segments[first][1] <= begin:
            first += 1
        if first < count and segments[first][0] <= begin < end <= segments[first][1]:
            # The whole day in one status, as most days are: no sweep.
            status = segments[first][2]
            observed = (end - begin) / 1_000_000
            result.append(Day(day, observed, observed if status in UP else 0.0, status))
            continue
        j = first
        while j < count and segments[j][0] < end:
            s_begin, s_end, status = segments[j]
            overlap_us = min(s_end, end) - max(s_begin, begin)
            if overlap_us > 0:
                overlap = overlap_us / 1_000_000
                observed += overlap
                if status in UP:
                    up += overlap
                if worst is None or _RANK[status] > _RANK[worst]:
                    worst = status
            j += 1
        result.append(Day(day, observed, up, worst))
    return tuple(result)


def _midnight(day: date, zone: zoneinfo.ZoneInfo) -> datetime:
    return datetime.combine(day, time(), tzinfo=zone).astimezone(UTC)

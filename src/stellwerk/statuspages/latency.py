"""Daily response times per component, from its linked check's results: the latency chart.

The store sums each check's passing results per quarter hour (UTC); a page reads those sums
grouped by hour, and `daily_latency` folds the hours into the calendar days of the page's time
zone, the same days as the uptime bars (`uptime.window`). Hours start where the zone's hours
start (`hour_shift`: a zone at +05:30 has its hours at :30 UTC), so every hour falls in one
local day. Failed results are left out: a timeout's ten seconds say nothing about how fast the
service answers. Pure functions, no I/O.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

HOUR = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class HourSum:
    """A check's passing results in one hour: how many, their summed and largest latency."""

    start: datetime
    count: int
    total_ms: float
    max_ms: float


@dataclass(frozen=True, slots=True)
class DayLatency:
    date: date
    count: int
    mean_ms: float | None  # None: no passing result that day
    max_ms: float | None


@dataclass(frozen=True, slots=True)
class Latency:
    """A component's days, oldest first, as measured by `check`."""

    component: str
    check: str
    days: tuple[DayLatency, ...]

    @property
    def mean_ms(self) -> float | None:
        count = sum(d.count for d in self.days)
        if count == 0:
            return None
        return sum(d.mean_ms * d.count for d in self.days if d.mean_ms is not None) / count


def hour_shift(time_zone: str, now: datetime) -> timedelta:
    """Where the zone's hours start past the UTC hour (0 for most zones, 30 minutes for
    India, 45 for Nepal), as its offset is at `now`."""
    offset = now.astimezone(zoneinfo.ZoneInfo(time_zone)).utcoffset() or timedelta()
    return offset % HOUR


def daily_latency(
    component: str, check: str, hours: Iterable[HourSum], dates: list[date], time_zone: str
) -> Latency:
    """`hours` folded into `dates` (the window's days, oldest first) in `time_zone`."""
    zone = zoneinfo.ZoneInfo(time_zone)
    sums: dict[date, tuple[int, float, float]] = {}
    for hour in hours:
        day = hour.start.astimezone(zone).date()
        count, total, top = sums.get(day, (0, 0.0, 0.0))
        sums[day] = (count + hour.count, total + hour.total_ms, max(top, hour.max_ms))
    days = []
    for day in dates:
        count, total, top = sums.get(day, (0, 0.0, 0.0))
        days.append(
            DayLatency(day, count, total / count if count else None, top if count else None)
        )
    return Latency(component, check, tuple(days))

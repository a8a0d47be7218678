"""Schedule expressions as EventBridge defines them, for scheduled rules:

- `rate(value unit)`: every `value` minutes, hours or days (`minute` and the others in the
  singular exactly when value is 1), counted from the rule's creation, to the whole minute.
- `cron(minutes hours day-of-month month day-of-week year)`, in UTC: fields take `*`, numbers,
  ranges `a-b`, lists `a,b`, increments `a/n` or `*/n`; months and days of the week also by name
  (`JAN`, `SUN`; days of the week 1-7 are SUN-SAT); one of day-of-month and day-of-week must be
  `?`; day-of-month takes `L` (the month's last day) and `nW` (the weekday nearest day n, within
  the month); day-of-week takes `nL` (the month's last such day) and `n#k` (its k-th).

`Schedule.ticks(after, until, anchor)` lists the ticks in `(after, until]`, whole minutes UTC.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Final

MAX_TICKS: Final = 10_000
_RATE: Final = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")
_CRON: Final = re.compile(r"^cron\((.+)\)$")
_MONTHS: Final = {m.upper(): i for i, m in enumerate(calendar.month_abbr) if m}
_DAYS: Final = {d: i + 1 for i, d in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))}
_UNITS: Final = {"minute": 1, "hour": 60, "day": 1440}


class InvalidScheduleError(ValueError):
    """The expression is not a schedule EventBridge takes; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Schedule:
    text: str
    every_minutes: int | None  # rate(...)
    matches: Callable[[datetime], bool] | None  # cron(...): whether a whole minute is a tick

    def ticks(self, after: datetime, until: datetime, anchor: datetime) -> list[datetime]:
        """Ticks in `(after, until]` (at most `MAX_TICKS`, the latest), whole minutes UTC;
        `anchor` (the rule's creation) is where a rate counts from."""
        first = _minute_after(after)
        last = until.astimezone(UTC).replace(second=0, microsecond=0)
        if first > last:
            return []
        found: list[datetime] = []
        if self.every_minutes is not None:
            start = anchor.astimezone(UTC).replace(second=0, microsecond=0)
            step = timedelta(minutes=self.every_minutes)
            # The first tick at or after `first`: the anchor plus one or more whole steps (a rate
            # first fires one period after the rule was made, not as it is made).
            steps = max(1, -(-(first - start) // step))
            tick = start + step * steps
            while tick <= last:
                found.append(tick)
                tick += step
            return found[-MAX_TICKS:]
        assert self.matches is not None
        minute = first
        while minute <= last:
            if self.matches(minute):
                found.append(minute)
            minute += timedelta(minutes=1)
        return found[-MAX_TICKS:]


def _minute_after(moment: datetime) -> datetime:
    whole = moment.astimezone(UTC).replace(second=0, microsecond=0)
    return whole + timedelta(minutes=1)


def parse_schedule(text: str) -> Schedule:
    rate = _RATE.match(text)
    if rate is not None:
        value, unit = int(rate.group(1)), rate.group(2)
        if value < 1:
            raise InvalidScheduleError("a rate's value must be at least 1")
        if (value == 1) != (not unit.endswith("s")):
            raise InvalidScheduleError(
                f"rate({value} {unit}): use the singular unit for 1 and the plural otherwise"
            )
        return Schedule(text, value * _UNITS[unit.rstrip("s")], None)
    cron = _CRON.match(text)
    if cron is None:
        raise InvalidScheduleError(
            f"{text!r} is not a schedule: rate(5 minutes) or cron(0 12 * * ? *)"
        )
    fields = cron.group(1).split()
    if len(fields) != 6:
        raise InvalidScheduleError(
            "cron(...) takes 6 fields: minutes hours day-of-month month day-of-week year"
        )
    minutes, hours, dom, months, dow, years = fields
    if (dom == "?") == (dow == "?"):
        raise InvalidScheduleError("one of day-of-month and day-of-week must be '?'")
    minute_set = _values(minutes, 0, 59, {}, "minutes")
    hour_set = _values(hours, 0, 23, {}, "hours")
    month_set = _values(months, 1, 12, _MONTHS, "month")
    year_set = _values(years, 1970, 2199, {}, "year")
    day_test = _day_of_month(dom) if dom != "?" else _day_of_week(dow)

    def matches(moment: datetime) -> bool:
        return (
            moment.minute in minute_set
            and moment.hour in hour_set
            and moment.month in month_set
            and moment.year in year_set
            and day_test(moment.date())
        )

    return Schedule(text, None, matches)


def _number(text: str, names: dict[str, int], field: str) -> int:
    if text.upper() in names:
        return names[text.upper()]
    if not text.isdigit():
        raise InvalidScheduleError(f"cron {field}: {text!r} is not a value")
    return int(text)


def _values(text: str, low: int, high: int, names: dict[str, int], field: str) -> set[int]:
    found: set[int] = set()
    for part in text.split(","):
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) < 1:
                raise InvalidScheduleError(f"cron {field}: {part!r} has no valid increment")
            step = int(step_text)
        if base == "*":
            start, end = low, high
        elif "-" in base:
            a, _, b = base.partition("-")
            start, end = _number(a, names, field), _number(b, names, field)
        else:
            start = _number(base, names, field)
            end = high if slash else start
        if not low <= start <= high or not low <= end <= high or start > end:
            raise InvalidScheduleError(f"cron {field}: {part!r} is outside {low}-{high}")
        found.update(range(start, end + 1, step))
    return found


def _day_of_month(text: str) -> Callable[[date], bool]:
    if text == "L":
        return lambda day: day.day == calendar.monthrange(day.year, day.month)[1]
    if text.endswith("W") and text[:-1].isdigit():
        wanted = int(text[:-1])
        if not 1 <= wanted <= 31:
            raise InvalidScheduleError(f"cron day-of-month: {text!r} is outside 1-31")
        return lambda day: day == _nearest_weekday(day.year, day.month, wanted)
    days = _values(text, 1, 31, {}, "day-of-month")
    return lambda day: day.day in days


def _nearest_weekday(year: int, month: int, wanted: int) -> date | None:
    last = calendar.monthrange(year, month)[1]
    if wanted > last:
        return None
    day = date(year, month, wanted)
    if day.weekday() == 5:  # Saturday: Friday, or Monday when Friday is last month
        return day - timedelta(days=1) if wanted > 1 else day + timedelta(days=2)
    if day.weekday() == 6:  # Sunday: Monday, or Friday when Monday is next month
        return day + timedelta(days=1) if wanted < last else day - timedelta(days=2)
    return day


def _weekday(day: date) -> int:
    """EventBridge's day of the week: 1 (SUN) to 7 (SAT)."""
    return (day.weekday() + 1) % 7 + 1


def _day_of_week(text: str) -> Callable[[date], bool]:
    if text.endswith("L") and len(text) > 1:
        wanted = _number(text[:-1], _DAYS, "day-of-week")
        return lambda day: (
            _weekday(day) == wanted and (day.day + 7 > calendar.monthrange(day.year, day.month)[1])
        )
    if "#" in text:
        name, _, nth = text.partition("#")
        wanted = _number(name, _DAYS, "day-of-week")
        if not nth.isdigit() or not 1 <= int(nth) <= 5:
            raise InvalidScheduleError(f"cron day-of-week: {text!r} needs #1 to #5")
        k = int(nth)
        return lambda day: _weekday(day) == wanted and (day.day - 1) // 7 + 1 == k
    days = _values(text, 1, 7, _DAYS, "day-of-week")
    return lambda day: _weekday(day) in days

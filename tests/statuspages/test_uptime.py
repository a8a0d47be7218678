"""Daily uptime from a status history: checked against a minute-by-minute count, in time zones
with odd offsets and daylight saving (a 23- or 25-hour day, a midnight that does not exist)."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from stellwerk.statuspages.model import ComponentStatus, StatusChange
from stellwerk.statuspages.render import runs
from stellwerk.statuspages.uptime import UP, Day, daily_uptime, window

ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kathmandu",  # +05:45
    "Australia/Lord_Howe",  # a 30-minute daylight saving shift
    "America/Santiago",  # its clocks jump at midnight: a day without a midnight
]
STEP = timedelta(minutes=15)  # every change, `now` and every zone's midnight fall on a step
DAYS = 6
# Around daylight saving changes: Berlin's (29 March), Lord Howe's and Santiago's (5 April),
# Santiago's spring one at midnight (6 September).
BASES = [
    datetime(2026, 3, 25, tzinfo=UTC),
    datetime(2026, 4, 1, tzinfo=UTC),
    datetime(2026, 9, 2, tzinfo=UTC),
]

steps = st.integers(min_value=0, max_value=(DAYS + 3) * 96)
statuses = st.sampled_from(list(ComponentStatus))


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[StatusChange], datetime, str]:
    base = draw(st.sampled_from(BASES))
    now = base + draw(st.integers(min_value=DAYS * 96, max_value=(DAYS + 3) * 96)) * STEP
    changes = []
    for component in ("a", "b"):
        times = sorted(draw(st.lists(steps, max_size=8)))
        for t in times:
            changes.append(StatusChange(component, draw(statuses), base + t * STEP))
    changes.sort(key=lambda c: c.at)
    return changes, now, draw(st.sampled_from(ZONES))


def status_at(changes: list[StatusChange], component: str, at: datetime) -> ComponentStatus | None:
    current = None
    for change in changes:
        if change.component == component and change.at <= at:
            current = change.status
    return current


@settings(max_examples=60, deadline=None)
@given(histories())
def test_each_day_matches_a_count_step_by_step(
    case: tuple[list[StatusChange], datetime, str],
) -> None:
    changes, now, zone_name = case
    zone = zoneinfo.ZoneInfo(zone_name)
    found = daily_uptime(["a", "b", "c"], changes, now=now, time_zone=zone_name, days=DAYS)
    start, dates = window(now, zone_name, DAYS)
    assert [d.date for d in found["a"].days] == dates
    expected: dict[str, dict[object, list[float]]] = {c: {} for c in "abc"}
    at = start
    while at < now:
        local_day = at.astimezone(zone).date()
        for component in "abc":
            status = status_at(changes, component, at)
            counts = expected[component].setdefault(local_day, [0.0, 0.0])
            if status is not None:
                counts[0] += STEP.total_seconds()
                counts[1] += STEP.total_seconds() if status in UP else 0.0
        at += STEP
    for component in "abc":
        for day in found[component].days:
            observed, up = expected[component].get(day.date, [0.0, 0.0])
            assert (day.observed, day.up) == (observed, up), (component, day)
            assert (day.worst is None) == (day.observed == 0)
            if day.share is not None:
                assert 0.0 <= day.share <= 1.0


@settings(max_examples=60, deadline=None)
@given(histories())
def test_the_days_together_cover_the_component_s_life_in_the_window(
    case: tuple[list[StatusChange], datetime, str],
) -> None:
    changes, now, zone_name = case
    start, _dates = window(now, zone_name, DAYS)
    found = daily_uptime(["a", "b"], changes, now=now, time_zone=zone_name, days=DAYS)
    for component in ("a", "b"):
        own = [c for c in changes if c.component == component]
        born = max(own[0].at, start) if own else now
        total = sum(d.observed for d in found[component].days)
        assert total == max((now - born).total_seconds(), 0.0)


@settings(max_examples=40, deadline=None)
@given(histories())
def test_the_worst_status_of_a_day_is_one_it_held_for_a_while(
    case: tuple[list[StatusChange], datetime, str],
) -> None:
    changes, now, zone_name = case
    found = daily_uptime(["a"], changes, now=now, time_zone=zone_name, days=DAYS)
    held = {c.status for c in changes if c.component == "a"}
    for day in found["a"].days:
        assert day.worst is None or day.worst in held
        if day.worst in UP:
            assert day.up == day.observed


def test_a_day_of_a_partial_outage_for_six_hours_is_three_quarters_up() -> None:
    day = datetime(2026, 5, 4, tzinfo=UTC)
    changes = [
        StatusChange("api", ComponentStatus.OPERATIONAL, day - timedelta(days=30)),
        StatusChange("api", ComponentStatus.PARTIAL_OUTAGE, day + timedelta(hours=6)),
        StatusChange("api", ComponentStatus.OPERATIONAL, day + timedelta(hours=12)),
    ]
    now = day + timedelta(days=1, hours=12)
    uptime = daily_uptime(["api"], changes, now=now, time_zone="UTC")["api"]
    assert len(uptime.days) == 90
    that_day = next(d for d in uptime.days if d.date == day.date())
    assert that_day.share == 0.75
    assert that_day.worst is ComponentStatus.PARTIAL_OUTAGE
    today = uptime.days[-1]
    assert (today.observed, today.share) == (12 * 3600, 1.0)
    assert uptime.days[0].worst is None  # long before the component was created


def test_a_day_in_berlin_when_clocks_go_forward_has_23_hours() -> None:
    created = datetime(2026, 3, 1, tzinfo=UTC)
    now = datetime(2026, 3, 30, 12, tzinfo=UTC)
    changes = [StatusChange("api", ComponentStatus.OPERATIONAL, created)]
    days = daily_uptime(["api"], changes, now=now, time_zone="Europe/Berlin")["api"].days
    by_date = {d.date.isoformat(): d for d in days}
    assert by_date["2026-03-29"].observed == 23 * 3600
    assert by_date["2026-03-28"].observed == 24 * 3600


def test_whole_days_of_one_status_merge_into_runs_and_a_day_with_more_stays_alone() -> None:
    day = timedelta(days=1)
    first = datetime(2026, 5, 1, tzinfo=UTC).date()
    ok, down = ComponentStatus.OPERATIONAL, ComponentStatus.MAJOR_OUTAGE
    days = [
        Day(first, 0.0, 0.0, None),  # before the component existed
        Day(first + day, 0.0, 0.0, None),
        Day(first + 2 * day, 86_400.0, 86_400.0, ok),
        Day(first + 3 * day, 86_400.0, 86_400.0, ok),
        Day(first + 4 * day, 86_400.0, 64_800.0, down),  # six hours down
        Day(first + 5 * day, 86_400.0, 86_400.0, ok),
        Day(first + 6 * day, 86_400.0, 86_400.0, ok),
        Day(first + 8 * day, 86_400.0, 86_400.0, ok),  # a day missing before it
        Day(first + 9 * day, 86_400.0, 0.0, down),  # days with trouble stay alone
        Day(first + 10 * day, 86_400.0, 0.0, down),
    ]
    assert [(r.first, r.days, r.level, r.share) for r in runs(days)] == [
        (first, 2, "none", None),
        (first + 2 * day, 2, "operational", 1.0),
        (first + 4 * day, 1, "major_outage", 0.75),
        (first + 5 * day, 2, "operational", 1.0),
        (first + 8 * day, 1, "operational", 1.0),
        (first + 9 * day, 1, "major_outage", 0.0),
        (first + 10 * day, 1, "major_outage", 0.0),
    ]
    assert runs([]) == []

"""Schedule expressions as EventBridge defines them: rates counted from the rule's creation,
cron's six fields with its special characters, and the expressions refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from stellwerk.rules import InvalidScheduleError, parse_schedule

T0 = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)  # a Friday


def ticks(text: str, after: datetime, until: datetime, anchor: datetime = T0) -> list[datetime]:
    return parse_schedule(text).ticks(after, until, anchor)


def test_a_rate_counts_from_the_rules_creation() -> None:
    anchor = T0 - timedelta(minutes=2)
    found = ticks("rate(5 minutes)", T0, T0 + timedelta(minutes=16), anchor)
    assert found == [T0 + timedelta(minutes=m) for m in (3, 8, 13)]
    assert ticks("rate(1 hour)", T0, T0 + timedelta(hours=2), T0) == [
        T0 + timedelta(hours=1),
        T0 + timedelta(hours=2),
    ]
    assert ticks("rate(1 day)", T0, T0 + timedelta(hours=23), T0) == []
    # Not as the rule is made: one period later.
    assert ticks("rate(5 minutes)", T0 - timedelta(minutes=1), T0 + timedelta(minutes=4), T0) == []


def test_the_window_is_open_before_and_closed_after() -> None:
    tick = T0 + timedelta(minutes=5)
    assert ticks("rate(5 minutes)", tick, tick + timedelta(seconds=59)) == []
    assert ticks("rate(5 minutes)", tick - timedelta(seconds=1), tick) == [tick]


def test_cron_fields_names_ranges_and_increments() -> None:
    week = ticks("cron(0 12 ? * MON-FRI *)", T0, T0 + timedelta(days=7))
    assert [t.strftime("%a %H:%M") for t in week] == [
        "Fri 12:00",
        "Mon 12:00",
        "Tue 12:00",
        "Wed 12:00",
        "Thu 12:00",
    ]
    quarter = ticks("cron(*/15 10 * * ? *)", T0 - timedelta(minutes=1), T0 + timedelta(hours=1))
    assert [t.minute for t in quarter] == [0, 15, 30, 45]
    assert ticks("cron(0 0 1 JAN,JUL ? 2027)", T0, T0 + timedelta(days=400)) == [
        datetime(2027, 1, 1, tzinfo=UTC),
        datetime(2027, 7, 1, tzinfo=UTC),
    ]


def test_cron_last_days_nearest_weekdays_and_nth_weekdays() -> None:
    december = (datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    assert ticks("cron(0 0 L * ? *)", *december) == [datetime(2026, 12, 31, tzinfo=UTC)]
    assert ticks("cron(15 10 ? * 6L *)", *december) == [
        datetime(2026, 12, 25, 10, 15, tzinfo=UTC)  # the last Friday
    ]
    assert ticks("cron(0 9 ? * 2#1 *)", *december) == [
        datetime(2026, 12, 7, 9, 0, tzinfo=UTC)  # the first Monday
    ]
    november = (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
    # The 15th is a Sunday: the nearest weekday is Monday the 16th.
    assert ticks("cron(0 0 15W * ? *)", *november) == [datetime(2026, 11, 16, tzinfo=UTC)]


@pytest.mark.parametrize(
    "text",
    [
        "rate(0 minutes)",
        "rate(1 minutes)",
        "rate(5 minute)",
        "rate(5 weeks)",
        "every 5 minutes",
        "cron(0 12 * * *)",
        "cron(0 12 * * MON *)",
        "cron(0 12 ? * ? *)",
        "cron(60 12 * * ? *)",
        "cron(0 12 * FOO ? *)",
        "cron(0 12 ? * MON#6 *)",
        "cron(*/0 12 * * ? *)",
    ],
)
def test_expressions_eventbridge_refuses_are_refused(text: str) -> None:
    with pytest.raises(InvalidScheduleError):
        parse_schedule(text)

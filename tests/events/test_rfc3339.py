"""RFC 3339 parsing and formatting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Final

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stellwerk.events import all_rfc3339, format_rfc3339, is_rfc3339, parse_rfc3339


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-01T12:00:00Z", datetime(2026, 3, 1, 12, tzinfo=UTC)),
        ("2026-03-01t12:00:00z", datetime(2026, 3, 1, 12, tzinfo=UTC)),
        ("2026-03-01T12:00:00.5Z", datetime(2026, 3, 1, 12, 0, 0, 500_000, tzinfo=UTC)),
        (
            "2026-03-01T12:00:00.123456789-05:30",
            datetime(
                2026, 3, 1, 12, 0, 0, 123456, tzinfo=timezone(-timedelta(hours=5, minutes=30))
            ),
        ),
        ("2016-12-31T23:59:60Z", datetime(2016, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)),
    ],
)
def test_parses_rfc3339_date_times(text: str, expected: datetime) -> None:
    assert parse_rfc3339(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2026-03-01",
        "2026-03-01T12:00Z",
        "2026-03-01T12:00:00",
        "2026-13-01T00:00:00Z",
        "2026-03-01T12:00:00+25:00",
        "2026-03-01T12:00:00.Z",
        "\uff12\uff10\uff12\uff16-03-01T12:00:00Z",
    ],
)
def test_refuses_what_is_not_rfc3339(text: str) -> None:
    with pytest.raises(ValueError, match=r"RFC 3339|valid"):
        parse_rfc3339(text)


@given(st.datetimes(timezones=st.just(UTC), min_value=datetime(1000, 1, 1)))
def test_format_then_parse_is_the_same_instant(moment: datetime) -> None:
    text = format_rfc3339(moment)
    assert parse_rfc3339(text) == moment
    assert text.endswith("Z")
    assert len(text) == 27


def test_format_refuses_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="naive"):
        format_rfc3339(datetime(2026, 3, 1))


CHECKED_TIMES = [
    "2026-03-01T12:00:00Z",
    "2024-02-29T00:00:00+14:00",
    "2016-12-31T23:59:60.5z",
    "2025-02-29T00:00:00Z",
    "2026-04-31T00:00:00Z",
    "2026-03-01T24:00:00Z",
    "2026-03-01T12:60:00Z",
    "2026-03-01T12:00:61Z",
    "2026-03-01T12:00:00+24:00",
    "0000-01-01T00:00:00Z",
    "0000-12-31T00:00:00Z",
    "0001-01-01T00:00:00Z",
    "2026-02-28T00:00:00Z",
    "2026-02-30T00:00:00Z",
    "2026-06-30T00:00:00Z",
    "2026-12-31T00:00:00Z",
    "2026-13-01T00:00:00Z",
    "2026-00-10T00:00:00Z",
    "2026-01-00T00:00:00Z",
    "0000-01-28T00:00:00Z",
    "2026-02-28t23:59:59.123456789-00:00",
    "2026-02-29T00:00:00Z",
    "2026-02-28 12:00:00Z",
    "2026-02-28T12:00:00+0100",
    "2026-02-28T12:00:00",
    "2026-02-28T12:00Z",
    "2026-02-28T12:00:00.Z",
    "2026-02-28T12:00:00Z ",
]


@pytest.mark.parametrize("text", CHECKED_TIMES)
def test_the_cheap_check_agrees_with_the_parser(text: str) -> None:
    try:
        parse_rfc3339(text)
        parsed = True
    except ValueError:
        parsed = False
    assert is_rfc3339(text) is parsed


_TIMES: Final = st.one_of(
    st.sampled_from(CHECKED_TIMES),
    st.datetimes(timezones=st.just(UTC)).map(format_rfc3339),
    # Line breaks, the separator of the joined check, inside and around valid times.
    st.sampled_from(CHECKED_TIMES).flatmap(
        lambda text: st.integers(0, len(text)).map(lambda at: text[:at] + "\n" + text[at:])
    ),
    st.text(alphabet="0123456789-:.TZtz+\n ", max_size=40),
)


@given(st.lists(_TIMES, max_size=12))
def test_a_batchs_times_are_checked_together_as_each_alone(texts: list[str]) -> None:
    assert all_rfc3339(texts) is all(map(is_rfc3339, texts))


def test_two_times_in_one_text_do_not_pass_for_two_texts() -> None:
    assert all_rfc3339(["2026-03-01T12:00:00Z", "2026-03-01T12:00:00Z"])
    assert not all_rfc3339(["2026-03-01T12:00:00Z\n2026-03-01T12:00:00Z"])
    assert not all_rfc3339(["2026-03-01T12:00:00Z\n2026-03-01T12:00:00Z", ""])

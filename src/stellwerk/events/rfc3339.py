"""RFC 3339 timestamps: strict parsing of `date-time` and the one format Stellwerk writes.

`datetime.fromisoformat` accepts much more than RFC 3339 (dates alone, week dates, missing
offsets), so CloudEvents `time` and API time windows go through this stricter parser.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Annotated

import msgspec

# A field that `parse_rfc3339` reads, as the OpenAPI document shows it (JSON Schema's
# `date-time` format is RFC 3339's). Decoding does not check it: the parser does, and its error
# names the field.
Rfc3339 = Annotated[str, msgspec.Meta(extra_json_schema={"format": "date-time"})]

# RFC 3339 section 5.6; "T" and "Z" may be lower case (section 5.6, note). The space separator
# the RFC tolerates "for readability" is not part of the grammar and is refused.
_DATE_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)


# The same grammar with the ranges of each field, for a check that needs no datetime.
_CHECKED = re.compile(
    r"\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])[Tt](?:[01]\d|2[0-3]):[0-5]\d:(?:[0-5]\d|60)"
    r"(?:\.\d+)?(?:[Zz]|[+-](?:[01]\d|2[0-3]):[0-5]\d)",
    re.ASCII,
)


# The same with days up to the 28th, which every month has, and no year 0000 (not a year of
# `date`): a match needs no look at the calendar. Most times are this; others take `_CHECKED`.
_COMMON = re.compile(
    r"(?!0000)\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|1\d|2[0-8])[Tt](?:[01]\d|2[0-3]):[0-5]\d"
    r":(?:[0-5]\d|60)(?:\.\d+)?(?:[Zz]|[+-](?:[01]\d|2[0-3]):[0-5]\d)",
    re.ASCII,
)


# `_COMMON` for several texts at once, joined by line breaks (which no time holds).
_COMMON_LINES = re.compile(rf"(?:{_COMMON.pattern}\n)*{_COMMON.pattern}", re.ASCII)


def all_rfc3339(texts: Sequence[str]) -> bool:
    """Whether every one of `texts` is an RFC 3339 `date-time` (`is_rfc3339` of each): a
    batch's times are checked by one match over them all, joined by line breaks, rather than
    a call per event (0.26 against 0.15 µs per time); the first that is not of the common form
    sends every one the way `is_rfc3339` goes."""
    if not texts:
        return True
    joined = "\n".join(texts)
    # A line break inside a text would pass for the boundary between two of them.
    if joined.count("\n") == len(texts) - 1 and _COMMON_LINES.fullmatch(joined) is not None:
        return True
    return all(map(is_rfc3339, texts))


def is_rfc3339(text: str) -> bool:
    """Whether `text` is an RFC 3339 `date-time`; the cheap check for validating every event."""
    if _COMMON.fullmatch(text) is not None:
        return True
    if _CHECKED.fullmatch(text) is None:
        return False
    try:
        date.fromisoformat(text[:10])  # the day exists in its month and year
    except ValueError:
        return False
    return True


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 `date-time` into an aware datetime; raise ValueError if it is not one.

    A leap second (`:60`) is accepted, as the RFC allows, and read as the last microsecond of
    the preceding second because `datetime` cannot hold it. Fractions beyond microseconds are
    truncated.
    """
    match = _DATE_TIME.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not an RFC 3339 date-time")
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    fraction = match.group(7) or ""
    micro = int((fraction + "000000")[:6])
    if second == 60:
        second, micro = 59, 999_999
    if match.group(8):
        tz: timezone = UTC
    else:
        offset_h, offset_m = int(match.group(10)), int(match.group(11))
        if offset_h > 23 or offset_m > 59:
            raise ValueError(f"{text!r} has an invalid UTC offset")
        sign = -1 if match.group(9) == "-" else 1
        tz = timezone(sign * timedelta(hours=offset_h, minutes=offset_m))
    try:
        return datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid date-time: {exc}") from None


def format_rfc3339(moment: datetime) -> str:
    """Format an aware datetime in UTC with microseconds and `Z`: `2026-01-02T03:04:05.000006Z`.

    The fixed width makes the strings sort like the instants they name.
    """
    if moment.tzinfo is None:
        raise ValueError("a naive datetime has no place in an event; give it a time zone")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

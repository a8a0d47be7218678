"""The times of Segment messages as `refine.epoch` reads them, with one look at the text when
it is the common RFC 3339 form, whose halves (the second, the fraction and zone) are kept."""

from __future__ import annotations

import functools
import re
from datetime import date
from typing import Final

from stellwerk.events import is_rfc3339
from stellwerk.tracking.refine import epoch

# The common RFC 3339 time, which needs no look at the calendar (`rfc3339._COMMON`), as
# `datetime.fromisoformat` reads it too: upper-case T and Z, at most microseconds, no leap
# second, a day up to the 28th, a year from 1971 (`_epoch`'s truncation is the floor then).
TIME: Final = re.compile(
    r"((?:19[7-9][1-9]|19[89]0|2\d{3})-(?:0[1-9]|1[0-2])-(?:0[1-9]|1\d|2[0-8]))T"
    r"([01]\d|2[0-3]):([0-5]\d):([0-5]\d)(?:\.\d{1,6})?(?:Z|([+-])([01]\d|2[0-3]):([0-5]\d))",
    re.ASCII,
)


@functools.lru_cache(maxsize=4_096)
def _day(text: str) -> int:
    """Unix seconds of a day's start (UTC)."""
    return (date.fromisoformat(text) - _EPOCH_DAY).days * 86_400


_EPOCH_DAY: Final = date(1970, 1, 1)


# The common form's two halves, its first 19 characters (`YYYY-MM-DDTHH:MM:SS`, fixed width)
# and the rest (the fraction, the zone), each as Unix seconds and as the zone's offset, kept
# once `TIME` matched them: `TIME` matches a text exactly when it matches both halves, and
# a batch's times share their second and (to the millisecond) their rest. A longer rest
# (microseconds, as Python's SDK writes them) rarely repeats: it is not kept, but read as a
# fraction checked here and a zone looked up (each zone that matched is kept as a rest of its
# own: a rest of six characters but a `Z` at the end is only ever a zone).
HEADS: Final[dict[str, int]] = {}
TAILS: Final[dict[str, int]] = {}
_HALVES_KEPT: Final = 4_096
_SHORT_REST: Final = 10  # characters: milliseconds and an offset, `.123+01:00`


def _offset(rest: str) -> int | None:
    """The zone's offset of a rest kept, or of a fraction and a kept zone; else None."""
    offset = TAILS.get(rest)
    if offset is not None or len(rest) <= _SHORT_REST:
        return offset
    zone_at = len(rest) - 1 if rest[-1] == "Z" else len(rest) - 6
    fraction = rest[:zone_at]  # `TIME`'s `\.\d{1,6}`, in ASCII digits
    digits = fraction[1:]
    if 1 <= len(digits) <= 6 and fraction[0] == "." and digits.isascii() and digits.isdigit():
        return TAILS.get(rest[zone_at:])
    return None


def times(timestamp: str | None, received_at: str) -> tuple[str | None, int]:
    """The event's `time` (the timestamp if RFC 3339) and `event_time` (`refine.epoch`), with
    one look at the text when it is the common form."""
    if timestamp is None:
        return None, epoch(None, received_at)
    head = HEADS.get(timestamp[:19])
    if head is not None:
        offset = _offset(timestamp[19:])
        if offset is not None:
            return timestamp, head - offset
    match = TIME.fullmatch(timestamp)
    if match is None:
        return (timestamp if is_rfc3339(timestamp) else None), epoch(timestamp, received_at)
    day, hours, minutes, seconds, sign, offset_hours, offset_minutes = match.groups()
    head = _day(day) + int(hours) * 3600 + int(minutes) * 60 + int(seconds)
    offset = 0
    if sign is not None:
        offset = int(offset_hours) * 3600 + int(offset_minutes) * 60
        offset = offset if sign == "+" else -offset
    if len(HEADS) >= _HALVES_KEPT:
        HEADS.clear()
    if len(TAILS) >= _HALVES_KEPT:
        TAILS.clear()
    HEADS[timestamp[:19]] = head
    rest = timestamp[19:]
    if len(rest) <= _SHORT_REST:
        TAILS[rest] = offset
    TAILS[rest[-1:] if sign is None else rest[-6:]] = offset  # the zone alone
    return timestamp, head - offset

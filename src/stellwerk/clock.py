"""Time as Stellwerk stores it: aware UTC datetimes, and whole microseconds since the Unix epoch.

Every store keeps recorded, due and dead times as integer microseconds (`to_us`, `from_us`),
which compare and index cheaply; `utc_now` is the default clock that tests replace.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Final

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)


def now_us() -> int:
    """`to_us(utc_now())` without the datetime (a quarter of the cost, for per-delivery use)."""
    return time.time_ns() // 1000


def us_clock(clock: Callable[[], datetime]) -> Callable[[], int]:
    """`clock` in microseconds since the epoch: `now_us` for the default clock, else a
    conversion of what `clock` says (a test's movable clock is kept to)."""
    if clock is utc_now:
        return now_us
    return lambda: to_us(clock())


def to_us(moment: datetime) -> int:
    """Microseconds since the epoch; a naive datetime is refused rather than guessed."""
    if moment.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    # The sum is exact and cheaper than dividing timedeltas (it runs per delivery in the queue).
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def as_utc(value: datetime) -> datetime:
    """A datetime read back from a store: SQLite hands back naive ones, and all of them are UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)

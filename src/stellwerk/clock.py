"""Time as Stellwerk stores it: aware UTC datetimes, and whole microseconds since the Unix epoch.

Every store keeps recorded, due and dead times as integer microseconds (`to_us`, `from_us`),
which compare and index cheaply; `utc_now` is the default clock that tests replace.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)


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

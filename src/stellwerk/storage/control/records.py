"""What the control plane's stores share: their errors and the UTC rule."""

from __future__ import annotations

from datetime import UTC, datetime


def utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything Stellwerk stores is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class NotFoundError(LookupError):
    """The named resource does not exist for this tenant."""


class ConflictError(ValueError):
    """The change contradicts what is stored: a name taken, a limit hit, a protected resource."""

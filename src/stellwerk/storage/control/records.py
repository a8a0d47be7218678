"""Helpers shared by the control plane's stores."""

from __future__ import annotations

from datetime import UTC, datetime


def utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything Stellwerk stores is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)

"""The SQLite files of an embedded data directory, named in one place for the stores and backups."""

from __future__ import annotations

from typing import Final

EVENTS_FILE: Final = "events.db"
DELIVERIES_FILE: Final = "deliveries.db"
ARCHIVES_FILE: Final = "archives.db"
CONTROL_FILE: Final = "control.db"

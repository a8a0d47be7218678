"""The files of an embedded data directory, named in one place for the stores and backups."""

from __future__ import annotations

from typing import Final

# The event log: a directory of log files and their index (before, one SQLite file).
LOG_DIR: Final = "log"
LEGACY_EVENTS_FILE: Final = "events.db"
DELIVERIES_FILE: Final = "deliveries.db"
ARCHIVES_FILE: Final = "archives.db"
CONTROL_FILE: Final = "control.db"

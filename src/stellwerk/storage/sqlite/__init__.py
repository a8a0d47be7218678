"""Embedded storage on SQLite files in the data directory: the event log (data plane)."""

from stellwerk.storage.sqlite.archives import ARCHIVES_FILE, SqliteArchiveStore
from stellwerk.storage.sqlite.eventlog import EVENTS_FILE, SqliteEventLog

__all__ = ["ARCHIVES_FILE", "EVENTS_FILE", "SqliteArchiveStore", "SqliteEventLog"]

"""The embedded event log: one SQLite file in WAL mode, one writer thread, group commit."""

from stellwerk.storage.eventlog.sqlite.log import SqliteEventLog

__all__ = ["SqliteEventLog"]

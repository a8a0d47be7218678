"""The embedded archive store: archived copies and archivers' cursors in an engine's file."""

from stellwerk.storage.archive.sqlite.schema import LEGACY_TABLES
from stellwerk.storage.archive.sqlite.schema import create as create_tables
from stellwerk.storage.archive.sqlite.store import SqliteArchiveStore

__all__ = ["LEGACY_TABLES", "SqliteArchiveStore", "create_tables"]

"""The embedded archive store: one SQLite file of archived copies and archivers' cursors."""

from stellwerk.storage.archive.sqlite.store import SqliteArchiveStore

__all__ = ["SqliteArchiveStore"]

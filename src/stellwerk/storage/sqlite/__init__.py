"""SQLite plumbing the embedded stores share: the data directory's files, the checkpointer and WAL
bound, multi-row inserts, and consistent backups of a live data directory."""

from stellwerk.storage.sqlite.backup import BackupError, BackupResult, Manifest, backup, restore
from stellwerk.storage.sqlite.checkpoint import Checkpointer, WalBound
from stellwerk.storage.sqlite.files import (
    ARCHIVES_FILE,
    CONTROL_FILE,
    DELIVERIES_FILE,
    LEGACY_EVENTS_FILE,
    LOG_DIR,
)
from stellwerk.storage.sqlite.rows import MAX_ROWS, InsertRows

__all__ = [
    "ARCHIVES_FILE",
    "CONTROL_FILE",
    "DELIVERIES_FILE",
    "LEGACY_EVENTS_FILE",
    "LOG_DIR",
    "MAX_ROWS",
    "BackupError",
    "BackupResult",
    "Checkpointer",
    "InsertRows",
    "Manifest",
    "WalBound",
    "backup",
    "restore",
]

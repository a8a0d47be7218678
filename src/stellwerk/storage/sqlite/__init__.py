"""SQLite plumbing the embedded stores share: the engine (writer thread, readers, connections and
the WAL's upkeep), the data directory's files, multi-row inserts, and consistent backups of a
live data directory."""

from stellwerk.storage.sqlite.adoption import AdoptError, adopt
from stellwerk.storage.sqlite.backup import (
    BackupError,
    BackupPart,
    BackupResult,
    Manifest,
    backup,
    copy_database,
    restore,
    verify,
)
from stellwerk.storage.sqlite.checkpoint import Checkpointer, WalBound
from stellwerk.storage.sqlite.connect import Role, connect, erasing
from stellwerk.storage.sqlite.disk import CODES as DISK_TROUBLE_CODES
from stellwerk.storage.sqlite.disk import DiskTrouble, diagnose, probe
from stellwerk.storage.sqlite.engine import Engine
from stellwerk.storage.sqlite.files import (
    ARCHIVES_FILE,
    CONTROL_FILE,
    DELIVERIES_FILE,
    LEGACY_EVENTS_FILE,
    LOG_DIR,
    PIPELINE_FILE,
    PIPELINE_LOCK,
    RUN_DIR,
    WRITER_LOCK,
)
from stellwerk.storage.sqlite.handle import Handle, Job
from stellwerk.storage.sqlite.lock import FileLock
from stellwerk.storage.sqlite.rows import MAX_ROWS, InsertRows

__all__ = [
    "ARCHIVES_FILE",
    "CONTROL_FILE",
    "DELIVERIES_FILE",
    "DISK_TROUBLE_CODES",
    "LEGACY_EVENTS_FILE",
    "LOG_DIR",
    "MAX_ROWS",
    "PIPELINE_FILE",
    "PIPELINE_LOCK",
    "RUN_DIR",
    "WRITER_LOCK",
    "AdoptError",
    "BackupError",
    "BackupPart",
    "BackupResult",
    "Checkpointer",
    "DiskTrouble",
    "Engine",
    "FileLock",
    "Handle",
    "InsertRows",
    "Job",
    "Manifest",
    "Role",
    "WalBound",
    "adopt",
    "backup",
    "connect",
    "copy_database",
    "diagnose",
    "erasing",
    "probe",
    "restore",
    "verify",
]

"""The files of an embedded data directory, named in one place for the stores and backups."""

from __future__ import annotations

from typing import Final

# The event log: a directory of log files and their index (before, one SQLite file).
LOG_DIR: Final = "log"
LEGACY_EVENTS_FILE: Final = "events.db"
# The delivery queue and the archive store, on one engine (docs/storage.md).
PIPELINE_FILE: Final = "pipeline.db"
# Their files before pipeline.db, moved into it on the first start (storage/pipeline).
DELIVERIES_FILE: Final = "deliveries.db"
ARCHIVES_FILE: Final = "archives.db"
CONTROL_FILE: Final = "control.db"
# What the processes on a data directory tell each other: held by the one process that appends
# to the log (in RUN_DIR), and by the one that runs the pipeline's roles (storage/sqlite/lock.py).
RUN_DIR: Final = "run"
WRITER_LOCK: Final = "log-writer.lock"
PIPELINE_LOCK: Final = "run/pipeline.lock"

"""The log's index: an SQLite file that says where each bus's chunks lie in the log files.

The files hold the events; the index is derived from them and lags behind by up to one index
interval. It is committed without an fsync of its own (`synchronous=NORMAL`): a power failure
may take its newest transactions, and opening the log then indexes again, from the files, what
lies beyond the index's high-water mark. Only the writer writes it, except trims and erasures,
which any process may run.

Tables (durable format: add columns with defaults and new tables, never change a meaning):
- `streams`: one row per tenant and bus, with the newest position stored on it;
- `chunks`: one row per chunk (a commit group's events of one bus): its first position, event
  count, recorded time and place in the files;
- `marks`: the first position and recorded time of each commit group. Recorded time follows
  position, so this small table turns times into positions for windows, trims and dedup
  expiry. Marks inside the dedup window outlive trimmed chunks: expiry still needs them;
- `state`: named integers: `indexed_file` and `indexed_end` (the high-water mark: every chunk
  before it is indexed), `flushed_below` (see `dedup.py`);
- `erasing`: erasures decided but maybe not yet written into the files (done again at open);
- `dedup_kept`: the dedup entries of erased events that runs may still lack;
- `dedup_entries`, `dedup_epochs`: see `dedup.py`.
"""

from __future__ import annotations

import sqlite3
from enum import Enum
from pathlib import Path
from typing import Final

from stellwerk.storage.eventlog.sqlite import dedup

INDEX_FILE: Final = "index.db"

DDL: Final = (
    """CREATE TABLE IF NOT EXISTS streams (
        stream INTEGER PRIMARY KEY,
        tenant TEXT NOT NULL,
        bus TEXT NOT NULL,
        last_position INTEGER NOT NULL DEFAULT 0,
        UNIQUE (tenant, bus)
    )""",
    """CREATE TABLE IF NOT EXISTS chunks (
        position INTEGER PRIMARY KEY,
        stream INTEGER NOT NULL,
        count INTEGER NOT NULL,
        recorded_us INTEGER NOT NULL,
        file INTEGER NOT NULL,
        offset INTEGER NOT NULL,
        length INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS chunks_by_stream ON chunks (stream, position)",
    """CREATE TABLE IF NOT EXISTS marks (
        position INTEGER PRIMARY KEY,
        recorded_us INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS marks_by_time ON marks (recorded_us)",
    """CREATE TABLE IF NOT EXISTS state (
        name TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS erasing (
        file INTEGER NOT NULL,
        offset INTEGER NOT NULL,
        pieces BLOB NOT NULL,
        PRIMARY KEY (file, offset)
    )""",
    """CREATE TABLE IF NOT EXISTS dedup_kept (
        hash INTEGER NOT NULL,
        tag INTEGER NOT NULL,
        position INTEGER NOT NULL,
        PRIMARY KEY (hash, tag)
    )""",
    *dedup.DDL,
)

SELECT_STREAMS: Final = "SELECT stream, tenant, bus, last_position FROM streams"
STREAM_OF: Final = "SELECT stream FROM streams WHERE tenant = ? AND bus = ?"
LAST_POSITION: Final = "SELECT last_position FROM streams WHERE tenant = ? AND bus = ?"
INSERT_STREAM: Final = "INSERT INTO streams (stream, tenant, bus) VALUES (?, ?, ?)"
UPDATE_STREAM: Final = "UPDATE streams SET last_position = max(last_position, ?) WHERE stream = ?"
INSERT_CHUNK: Final = (
    "INSERT OR REPLACE INTO chunks (position, stream, count, recorded_us, file, offset, length)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
INSERT_MARK: Final = "INSERT OR REPLACE INTO marks (position, recorded_us) VALUES (?, ?)"
LAST_MARK: Final = "SELECT position, recorded_us FROM marks ORDER BY position DESC LIMIT 1"
# The first position recorded at or after a time; NULL when none is.
FIRST_MARK_SINCE: Final = (
    "SELECT position, recorded_us FROM marks WHERE recorded_us >= ?"
    " ORDER BY recorded_us, position LIMIT 1"
)
GET_STATE: Final = "SELECT value FROM state WHERE name = ?"
SET_STATE: Final = "INSERT OR REPLACE INTO state (name, value) VALUES (?, ?)"
# The chunks of a stream that end above `after` and start below `before`: the one holding
# `after + 1` (if any) and those after it.
READ_CHUNKS: Final = """
    SELECT position, count, recorded_us, file, offset, length FROM chunks
    WHERE stream = ?1 AND position >= coalesce(
        (SELECT max(position) FROM chunks WHERE stream = ?1 AND position <= ?2), 0)
      AND position < ?3
    ORDER BY stream, position
"""
LAST_CHUNK: Final = (
    "SELECT position, count, file, offset, length FROM chunks ORDER BY position DESC LIMIT 1"
)


class Role(Enum):
    """Who opens a connection: the writer, a reader, the checkpointer, or upkeep (trims and
    erasures, from any process)."""

    WRITER = "writer"
    READER = "reader"
    CHECKPOINTER = "checkpointer"
    UPKEEP = "upkeep"


def connect(path: Path, *, role: Role) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit) with the index's pragmas.

    `synchronous=NORMAL`: a commit is atomic and survives a crash of the process; a power
    failure may undo the newest ones, which opening the log redoes from the files. Upkeep
    commits that delete files or blank bytes switch to FULL for that commit (`durably`).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute("PRAGMA synchronous = NORMAL")
    if role in (Role.WRITER, Role.UPKEEP):
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            conn.close()
            raise sqlite3.OperationalError(f"{path} cannot be put in WAL mode (got {mode})")
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute("PRAGMA journal_size_limit = 67108864")
        conn.execute("PRAGMA secure_delete = ON")
        for statement in DDL:
            conn.execute(statement)
    elif role is Role.READER:
        conn.execute("PRAGMA query_only = ON")
    return conn


def get_state(conn: sqlite3.Connection, name: str, default: int) -> int:
    row = conn.execute(GET_STATE, (name,)).fetchone()
    return int(row[0]) if row else default

"""Tables and statements of the embedded event log, and how its SQLite connections are opened.

This file is the data plane, created on start; it is not managed by the control plane's Alembic
migrations. Durable-format rule: add columns with defaults and new tables, never change the
meaning of what is there.

- `streams`: one row per tenant and bus, with the newest position ever stored on it.
- `events`: the log. `position` is the rowid, assigned by the writer in commit order, shared by
  all buses; `recorded_us` (microseconds since the epoch, UTC) never decreases with position.
- `marks`: the first position and recorded time of each committed group. Because recorded time
  follows position, this small table turns time into positions for windows, trims and dedup
  expiry without an index on every event's time.
- `dedup`: `(stream, source, id)` of events within the dedup window, keyed by position so that
  expired entries are removed by position range.
"""

from __future__ import annotations

import sqlite3
from enum import Enum
from pathlib import Path
from typing import Final

DDL: Final = (
    """CREATE TABLE IF NOT EXISTS streams (
        stream INTEGER PRIMARY KEY,
        tenant TEXT NOT NULL,
        bus TEXT NOT NULL,
        last_position INTEGER NOT NULL DEFAULT 0,
        UNIQUE (tenant, bus)
    )""",
    """CREATE TABLE IF NOT EXISTS events (
        position INTEGER PRIMARY KEY,
        stream INTEGER NOT NULL,
        recorded_us INTEGER NOT NULL,
        id TEXT NOT NULL,
        source TEXT NOT NULL,
        type TEXT NOT NULL,
        subject TEXT,
        body BLOB NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS events_by_stream ON events (stream, position)",
    """CREATE TABLE IF NOT EXISTS marks (
        position INTEGER PRIMARY KEY,
        recorded_us INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS marks_by_time ON marks (recorded_us)",
    """CREATE TABLE IF NOT EXISTS dedup (
        position INTEGER PRIMARY KEY,
        stream INTEGER NOT NULL,
        source TEXT NOT NULL,
        id TEXT NOT NULL,
        recorded_us INTEGER NOT NULL
    )""",
    "CREATE UNIQUE INDEX IF NOT EXISTS dedup_by_key ON dedup (stream, source, id)",
)

INSERT_STREAM: Final = "INSERT INTO streams (tenant, bus) VALUES (?, ?)"
SELECT_STREAMS: Final = "SELECT stream, tenant, bus, last_position FROM streams"
UPDATE_STREAM: Final = "UPDATE streams SET last_position = ? WHERE stream = ?"
INSERT_EVENT: Final = (
    "INSERT INTO events (position, stream, recorded_us, id, source, type, subject, body)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
INSERT_MARK: Final = "INSERT INTO marks (position, recorded_us) VALUES (?, ?)"
LAST_MARK: Final = "SELECT recorded_us FROM marks ORDER BY position DESC LIMIT 1"
# The first position recorded at or after a time; NULL when none is.
FIRST_POSITION_SINCE: Final = (
    "SELECT position FROM marks WHERE recorded_us >= ? ORDER BY recorded_us, position LIMIT 1"
)
# Live duplicates (recorded after the cutoff) of a group's keys, given as a JSON array of
# [stream, source, id] triples.
FIND_DUPLICATES: Final = """
    SELECT k.key, d.position FROM json_each(?) AS k
    JOIN dedup AS d
      ON d.stream = k.value ->> 0 AND d.source = k.value ->> 1 AND d.id = k.value ->> 2
    WHERE d.recorded_us > ?
"""
# REPLACE takes over an expired entry for the same key that the sweep has not removed yet.
UPSERT_DEDUP: Final = (
    "INSERT OR REPLACE INTO dedup (position, stream, source, id, recorded_us)"
    " VALUES (?, ?, ?, ?, ?)"
)
MIN_DEDUP_POSITION: Final = "SELECT min(position) FROM dedup"
DELETE_DEDUP_BELOW: Final = "DELETE FROM dedup WHERE position < ?"
MIN_EVENT_POSITION: Final = "SELECT min(position) FROM events"
DELETE_EVENTS_BELOW: Final = "DELETE FROM events WHERE position < ?"
# The newest mark stays: it carries the recorded time that the next group must not go below.
DELETE_MARKS_BELOW: Final = (
    "DELETE FROM marks WHERE position < ? AND position < (SELECT max(position) FROM marks)"
)

_READ_COLUMNS: Final = "position, recorded_us, id, source, type, subject, body"
_STREAM_OF: Final = "(SELECT stream FROM streams WHERE tenant = ? AND bus = ?)"
READ: Final = (
    f"SELECT {_READ_COLUMNS} FROM events WHERE stream = {_STREAM_OF}"
    " AND position > ? ORDER BY position LIMIT ?"
)
READ_RANGE: Final = (
    f"SELECT {_READ_COLUMNS} FROM events WHERE stream = {_STREAM_OF}"
    " AND position > ? AND position < ? ORDER BY position LIMIT ?"
)
LAST_POSITION: Final = "SELECT last_position FROM streams WHERE tenant = ? AND bus = ?"


class Role(Enum):
    """Who opens a connection: the one writer, a reader, or the background checkpointer."""

    WRITER = "writer"
    READER = "reader"
    CHECKPOINTER = "checkpointer"


def connect(path: Path, *, role: Role) -> sqlite3.Connection:
    """Open a connection in autocommit mode (transactions are explicit) with the log's pragmas.

    `synchronous=FULL` makes a commit durable against power loss in WAL mode, not just against a
    crash of the process; that is what acknowledging an event promises. The writer never
    checkpoints by itself (see `checkpoint.py`); the writer creates the schema.
    """
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute("PRAGMA synchronous = FULL")
    if role is Role.WRITER:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            conn.close()
            raise sqlite3.OperationalError(f"{path} cannot be put in WAL mode (got {mode})")
        conn.execute("PRAGMA cache_size = -32768")
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        # After a checkpoint, shrink a WAL that a burst made large, so the disk use stays bounded.
        conn.execute("PRAGMA journal_size_limit = 67108864")
        for statement in DDL:
            conn.execute(statement)
    elif role is Role.READER:
        conn.execute("PRAGMA query_only = ON")
    return conn

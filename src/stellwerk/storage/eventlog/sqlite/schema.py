"""Tables and statements of the embedded event log, and how its SQLite connections are opened.

The file is the data plane, created on start, outside the control plane's migrations. Durable-
format rule: add columns with defaults and new tables, never change the meaning of what is
there. The tables and why they are shaped so: docs/storage.md.
"""

from __future__ import annotations

import sqlite3
from enum import Enum
from pathlib import Path
from typing import Final

SEGMENT_EVENTS: Final = 512

DDL: Final = (
    """CREATE TABLE IF NOT EXISTS streams (
        stream INTEGER PRIMARY KEY,
        tenant TEXT NOT NULL,
        bus TEXT NOT NULL,
        last_position INTEGER NOT NULL DEFAULT 0,
        UNIQUE (tenant, bus)
    )""",
    """CREATE TABLE IF NOT EXISTS segments (
        position INTEGER PRIMARY KEY,
        stream INTEGER NOT NULL,
        count INTEGER NOT NULL,
        recorded_us INTEGER NOT NULL,
        meta BLOB NOT NULL,
        ends BLOB NOT NULL,
        bodies BLOB NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS segments_by_stream ON segments (stream, position)",
    """CREATE TABLE IF NOT EXISTS marks (
        position INTEGER PRIMARY KEY,
        recorded_us INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS marks_by_time ON marks (recorded_us)",
    """CREATE TABLE IF NOT EXISTS dedup_keys (
        hash INTEGER PRIMARY KEY,
        position INTEGER NOT NULL,
        tag INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS dedup_keys_by_position ON dedup_keys (position)",
    """CREATE TABLE IF NOT EXISTS dedup_spill (
        position INTEGER PRIMARY KEY,
        stream INTEGER NOT NULL,
        source TEXT NOT NULL,
        id TEXT NOT NULL
    )""",
    "CREATE UNIQUE INDEX IF NOT EXISTS dedup_spill_by_key ON dedup_spill (stream, source, id)",
    """CREATE TABLE IF NOT EXISTS dedup_state (
        id INTEGER PRIMARY KEY CHECK (id = 0),
        flushed_below INTEGER NOT NULL
    )""",
)

INSERT_STREAM: Final = "INSERT INTO streams (tenant, bus) VALUES (?, ?)"
SELECT_STREAMS: Final = "SELECT stream, tenant, bus, last_position FROM streams"
UPDATE_STREAM: Final = "UPDATE streams SET last_position = ? WHERE stream = ?"
INSERT_SEGMENT: Final = (
    "INSERT INTO segments (position, stream, count, recorded_us, meta, ends, bodies)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
INSERT_MARK: Final = "INSERT INTO marks (position, recorded_us) VALUES (?, ?)"
LAST_MARK: Final = "SELECT recorded_us FROM marks ORDER BY position DESC LIMIT 1"
LAST_SEGMENT_END: Final = "SELECT max(position + count) FROM segments"
# The first position recorded at or after a time; NULL when none is.
FIRST_POSITION_SINCE: Final = (
    "SELECT position FROM marks WHERE recorded_us >= ? ORDER BY recorded_us, position LIMIT 1"
)
# The same with the mark's time, which says how long the answer holds (`GroupCommitter`).
FIRST_LIVE_MARK: Final = (
    "SELECT position, recorded_us FROM marks WHERE recorded_us >= ?"
    " ORDER BY recorded_us, position LIMIT 1"
)
# Entries at or above a position (the first live one) for a group's hashes, given as a JSON array.
FIND_HASHES: Final = """
    SELECT k.key, d.position, d.tag FROM json_each(?) AS k
    JOIN dedup_keys AS d ON d.hash = k.value
    WHERE d.position >= ?
"""
# REPLACE takes over an expired entry for the same hash that the sweep has not removed yet.
UPSERT_HASH: Final = "INSERT OR REPLACE INTO dedup_keys (hash, position, tag) VALUES (?, ?, ?)"
# The same for a whole group in one statement, from a JSON array of rows: executemany would
# release and take back the GIL around every row, and each time wait for the event loop.
UPSERT_HASHES: Final = """
    INSERT OR REPLACE INTO dedup_keys (hash, position, tag)
    SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each(?)
"""
FIND_SPILLED: Final = """
    SELECT k.key, d.position FROM json_each(?) AS k
    JOIN dedup_spill AS d
      ON d.stream = k.value ->> 0 AND d.source = k.value ->> 1 AND d.id = k.value ->> 2
    WHERE d.position >= ?
"""
UPSERT_SPILLED: Final = (
    "INSERT OR REPLACE INTO dedup_spill (position, stream, source, id) VALUES (?, ?, ?, ?)"
)
COUNT_SPILLED: Final = "SELECT count(*) FROM dedup_spill"
SPILLED_SINCE: Final = "SELECT position FROM dedup_spill WHERE position >= ?"
DEDUP_STATE: Final = "SELECT flushed_below FROM dedup_state WHERE id = 0"
SET_DEDUP_STATE: Final = "INSERT OR REPLACE INTO dedup_state (id, flushed_below) VALUES (0, ?)"
# The keys of the events from a position on, to rebuild the entries not yet flushed.
SEGMENT_KEYS_SINCE: Final = (
    "SELECT position, stream, meta FROM segments WHERE position + count > ? ORDER BY position"
)
MIN_DEDUP_POSITION: Final = "SELECT min(position) FROM dedup_keys"
DELETE_DEDUP_BELOW: Final = "DELETE FROM dedup_keys WHERE position < ?"
DELETE_SPILLED_BELOW: Final = "DELETE FROM dedup_spill WHERE position < ?"
MIN_SEGMENT_POSITION: Final = "SELECT min(position) FROM segments"
# Trims take whole segments: a segment lies within one group, so it is all below a group's
# first position or all at or above it.
# Segments within `[?1, ?2)`, sparing a stream's segments that reach past its keep bound: ?3 is
# a JSON object from stream id (as text) to the first position that stream keeps.
DELETE_SEGMENTS_IN: Final = """
    DELETE FROM segments WHERE position >= ?1 AND position < ?2
      AND position + count <= coalesce(?3 ->> ('$."' || stream || '"'), 9223372036854775807)
    RETURNING count
"""
# The newest mark stays: it carries the recorded time that the next group must not go below.
DELETE_MARKS_BELOW: Final = (
    "DELETE FROM marks WHERE position < ? AND position < (SELECT max(position) FROM marks)"
)

_READ_COLUMNS: Final = "position, count, recorded_us, meta, ends, bodies"
STREAM_OF: Final = "SELECT stream FROM streams WHERE tenant = ? AND bus = ?"
# Segments of a stream that end above `after`: the one holding `after + 1` (if any) and those
# after it. Readers walk them with a cursor and stop once they have `limit` events.
READ_SEGMENTS: Final = f"""
    SELECT {_READ_COLUMNS} FROM segments
    WHERE stream = ?1 AND position >= coalesce(
        (SELECT max(position) FROM segments WHERE stream = ?1 AND position <= ?2), 0)
      AND position < ?3
    ORDER BY stream, position
"""
LAST_POSITION: Final = "SELECT last_position FROM streams WHERE tenant = ? AND bus = ?"

# The layout before segments, moved over once by `migrate_rows`.
LEGACY_TABLES: Final = ("events", "dedup")
LEGACY_EVENTS: Final = (
    "SELECT position, stream, recorded_us, id, source, type, subject, body FROM events"
    " WHERE position > ? ORDER BY position LIMIT ?"
)
LEGACY_DEDUP: Final = (
    "SELECT position, stream, source, id FROM dedup WHERE position > ? ORDER BY position LIMIT ?"
)


class Role(Enum):
    """Who opens a connection: the one writer, a reader, or the background checkpointer."""

    WRITER = "writer"
    READER = "reader"
    CHECKPOINTER = "checkpointer"


def connect(path: Path, *, role: Role) -> sqlite3.Connection:
    """Open a connection in autocommit mode (transactions are explicit) with the log's pragmas.

    `synchronous=FULL` makes a commit durable against power loss in WAL mode, not just against a
    crash of the process; that is what acknowledging an event promises. The writer never
    checkpoints by itself (see `storage/sqlite/checkpoint.py`); the writer creates the schema.
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

"""The embedded archive store's tables and statements (docs/storage.md).

Durable-format rule as for the event log: add columns with defaults and new tables only.
"""

from __future__ import annotations

import sqlite3
from typing import Final

from stellwerk.storage.sqlite import InsertRows

DDL: Final = (
    """CREATE TABLE IF NOT EXISTS archives (
        aid INTEGER PRIMARY KEY,
        uid TEXT NOT NULL UNIQUE,
        events INTEGER NOT NULL DEFAULT 0,
        bytes INTEGER NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE IF NOT EXISTS archived (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        aid INTEGER NOT NULL,
        position INTEGER NOT NULL,
        recorded_us INTEGER NOT NULL,
        id TEXT NOT NULL,
        source TEXT NOT NULL,
        type TEXT NOT NULL,
        subject TEXT,
        body BLOB NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS archived_by_time ON archived (aid, recorded_us)",
    # The archiver's cursor per bus (`cursors` in archives.db, beside the router's here).
    """CREATE TABLE IF NOT EXISTS archive_cursors (
        tenant TEXT NOT NULL,
        bus TEXT NOT NULL,
        position INTEGER NOT NULL,
        PRIMARY KEY (tenant, bus)
    ) WITHOUT ROWID""",
)
# The store's tables in archives.db, the file it had before pipeline.db, and their names here.
LEGACY_TABLES: Final = {
    "archives": "archives",
    "archived": "archived",
    "cursors": "archive_cursors",
}

COLUMNS: Final = "seq, position, recorded_us, id, source, type, subject, body"
AID: Final = "SELECT aid FROM archives WHERE uid = ?"
CURSOR: Final = "SELECT position FROM archive_cursors WHERE tenant = ? AND bus = ?"
SET_CURSOR: Final = (
    "INSERT INTO archive_cursors (tenant, bus, position) VALUES (?, ?, ?)"
    " ON CONFLICT (tenant, bus) DO UPDATE SET position = excluded.position"
)
INSERT: Final = InsertRows(
    "INSERT INTO archived (aid, position, recorded_us, id, source, type, subject, body)"
)
ADD_TOTALS: Final = "UPDATE archives SET events = events + ?, bytes = bytes + ? WHERE aid = ?"
READ_FROM_START: Final = f"""
    SELECT {COLUMNS} FROM archived
    WHERE aid = ? AND recorded_us >= ? AND recorded_us < ? AND seq > ?
    ORDER BY recorded_us, seq LIMIT ?
"""
READ_AFTER: Final = f"""
    SELECT {COLUMNS} FROM archived
    WHERE aid = ? AND (recorded_us, seq) > (?, ?) AND recorded_us >= ? AND recorded_us < ?
    ORDER BY recorded_us, seq LIMIT ?
"""
# The recorded time of the archive's event at `after_seq`, or of the last before it if that one
# is gone: every later event of the archive was recorded no earlier. `+aid` keeps SQLite off
# the time index (which would sort the whole archive) and on a short walk back by rowid.
ANCHOR: Final = (
    "SELECT recorded_us FROM archived WHERE seq <= ? AND +aid = ? ORDER BY seq DESC LIMIT 1"
)
COUNT: Final = (
    "SELECT count(*) FROM archived WHERE aid = ? AND recorded_us >= ? AND recorded_us < ?"
)
OLDER: Final = (
    "SELECT seq FROM archived WHERE aid = ? AND recorded_us < ? ORDER BY recorded_us LIMIT ?"
)
# The seqs as one JSON array: a chunk is more than a statement's host parameters.
DELETE_SEQS: Final = (
    "DELETE FROM archived WHERE seq IN (SELECT value FROM json_each(?)) RETURNING length(body)"
)
# The whole archive by its index; and the few events archived since a scan, by rowid.
CANDIDATES: Final = f"""
    SELECT {COLUMNS} FROM archived WHERE aid = ? AND seq > ? AND instr(body, ?) > 0
"""
LATE_CANDIDATES: Final = f"""
    SELECT {COLUMNS} FROM archived WHERE +aid = ? AND seq > ? AND instr(body, ?) > 0
"""
DELETE_SEQ: Final = "DELETE FROM archived WHERE seq = ? RETURNING length(body)"


def create(conn: sqlite3.Connection) -> None:
    """The store's tables, inside the caller's transaction."""
    for statement in DDL:
        conn.execute(statement)

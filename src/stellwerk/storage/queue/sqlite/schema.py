"""The embedded delivery queue's tables and statements (docs/storage.md).

Durable-format rule as for the event log: add columns with defaults and new tables only.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterable
from typing import Final

from stellwerk.storage.queue.sqlite import history
from stellwerk.storage.sqlite import InsertRows

READY, WAITING, DEAD = 0, 1, 2

DDL: Final = (
    """CREATE TABLE IF NOT EXISTS targets (
        target INTEGER PRIMARY KEY,
        tenant TEXT NOT NULL, bus TEXT NOT NULL, rule TEXT NOT NULL, target_id TEXT NOT NULL,
        UNIQUE (tenant, bus, rule, target_id)
    )""",
    # The router's cursor per bus.
    """CREATE TABLE IF NOT EXISTS cursors (
        tenant TEXT NOT NULL, bus TEXT NOT NULL, position INTEGER NOT NULL,
        PRIMARY KEY (tenant, bus)
    ) WITHOUT ROWID""",
    # A replay's cursor: the archive seq it routed up to, and how many events that was.
    """CREATE TABLE IF NOT EXISTS replay_cursors (
        tenant TEXT NOT NULL, replay TEXT NOT NULL, seq INTEGER NOT NULL,
        replayed INTEGER NOT NULL, PRIMARY KEY (tenant, replay)
    ) WITHOUT ROWID""",
    # due_us: when a ready delivery may be leased next; while leased, when the lease expires.
    # age_from_us: where maximum_event_age counts from (recorded time, or the last redrive).
    """CREATE TABLE IF NOT EXISTS deliveries (
        id INTEGER PRIMARY KEY,
        target INTEGER NOT NULL,
        state INTEGER NOT NULL,
        due_us INTEGER NOT NULL,
        leased INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        event_id TEXT NOT NULL,
        event_source TEXT NOT NULL,
        position INTEGER NOT NULL,
        recorded_us INTEGER NOT NULL,
        age_from_us INTEGER NOT NULL,
        payload BLOB NOT NULL,
        content_type TEXT NOT NULL,
        ordering_key TEXT,
        last_error TEXT,
        dead_us INTEGER
    )""",
    "CREATE INDEX IF NOT EXISTS ready_by_target ON deliveries (target, due_us) WHERE state = 0",
    """CREATE INDEX IF NOT EXISTS ordered_groups ON deliveries (target, ordering_key, id)
        WHERE ordering_key IS NOT NULL AND state < 2""",
    "CREATE INDEX IF NOT EXISTS dead_by_target ON deliveries (target, id) WHERE state = 2",
    # A payload that several deliveries of one `route` share (an event matched by many rules)
    # is stored once here; those deliveries keep an empty `payload` and point at it (`body`).
    # `refs` counted the deliveries that point at it when it was stored (it is not kept up to
    # date); an ack deletes it when no delivery points at it any more (`deliveries_by_body`).
    """CREATE TABLE IF NOT EXISTS bodies (
        id INTEGER PRIMARY KEY, payload BLOB NOT NULL, refs INTEGER NOT NULL
    )""",
)
# The queue's tables in deliveries.db, the file it had before pipeline.db, and their names here.
LEGACY_TABLES: Final = {
    "targets": "targets",
    "cursors": "cursors",
    "replay_cursors": "replay_cursors",
    "deliveries": "deliveries",
    "bodies": "bodies",
}

# A leased delivery's columns; `body` names its shared payload (`bodies`), if it has one, which
# is looked up apart: a join for every row cost a third of the read, for the few that share.
# `archived` names the archived copy whose first `archived_kept` bytes come before `payload`
# (a replayed delivery in the archive's file, see `refer_to_archive`).
COLUMNS: Final = (
    "id, target, attempts, event_id, event_source, position, recorded_us, age_from_us, payload,"
    " content_type, ordering_key, last_error, body, archived, archived_kept"
)
INSERT: Final = InsertRows(
    "INSERT INTO deliveries (id, target, state, due_us, event_id, event_source, position,"
    " recorded_us, age_from_us, payload, content_type, ordering_key, body, archived,"
    " archived_kept)"
)
CURSOR: Final = "SELECT position FROM cursors WHERE tenant = ? AND bus = ?"
# Never back: a cursor written later (by `route`, or by another process) may be further.
SET_CURSOR: Final = (
    "INSERT INTO cursors (tenant, bus, position) VALUES (?, ?, ?)"
    " ON CONFLICT (tenant, bus) DO UPDATE SET position = excluded.position"
    " WHERE excluded.position > cursors.position"
)
REPLAY_CURSOR: Final = "SELECT seq, replayed FROM replay_cursors WHERE tenant = ? AND replay = ?"
MOVE_REPLAY_CURSOR: Final = (
    "INSERT INTO replay_cursors (tenant, replay, seq, replayed) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (tenant, replay) DO UPDATE"
    " SET seq = excluded.seq, replayed = replayed + excluded.replayed"
)
# Ids only: answered from the ready index alone, so reading past leased rows costs no row reads.
DUE_IDS: Final = (
    "SELECT id FROM deliveries WHERE target = ? AND state = 0 AND due_us <= ?"
    " ORDER BY due_us, id LIMIT ?"
)
EARLIEST: Final = "SELECT min(due_us) FROM deliveries WHERE target = ? AND state = 0"
GROUP_BUSY: Final = (
    "SELECT 1 FROM deliveries WHERE target = ? AND ordering_key = ? AND state < 2 LIMIT 1"
)
NEXT_IN_GROUP: Final = (
    "SELECT id, due_us FROM deliveries WHERE target = ? AND ordering_key = ? AND state = 1"
    " ORDER BY id LIMIT 1"
)
DEAD_COLUMNS: Final = (
    "d.id, t.rule, t.target_id, d.event_id, d.event_source, d.position, d.recorded_us,"
    " d.dead_us, d.attempts, d.last_error, coalesce(b.payload, d.payload), d.content_type,"
    " d.ordering_key, d.archived, d.archived_kept"
)


def archived_bodies(conn: sqlite3.Connection, seqs: Iterable[int | None]) -> dict[int, bytes]:
    """The archived copies that deliveries point at, by seq (none: no lookup)."""
    wanted = {seq for seq in seqs if seq is not None}
    if not wanted:
        return {}
    marks = ",".join("?" * len(wanted))
    return dict(conn.execute(f"SELECT seq, body FROM archived WHERE seq IN ({marks})", [*wanted]))


def create(conn: sqlite3.Connection) -> None:
    """The queue's tables, inside the caller's transaction."""
    for statement in DDL:
        conn.execute(statement)
    history.create(conn)
    columns = {row[1] for row in conn.execute("PRAGMA table_info(deliveries)")}
    if "body" not in columns:  # a file from before shared bodies
        conn.execute("ALTER TABLE deliveries ADD COLUMN body INTEGER")
    if "archived" not in columns:  # a file from before replays pointed at the archive
        conn.execute("ALTER TABLE deliveries ADD COLUMN archived INTEGER")
        conn.execute("ALTER TABLE deliveries ADD COLUMN archived_kept INTEGER")
    # Which deliveries point at a body: only those that share one are in it.
    conn.execute(
        "CREATE INDEX IF NOT EXISTS deliveries_by_body ON deliveries (body) WHERE body IS NOT NULL"
    )


def refer_to_archive(conn: sqlite3.Connection) -> None:
    """Let deliveries point at archived copies in this file, inside the caller's transaction.

    The archive store calls `give_archived_bytes` before it deletes copies. The index of the
    deliveries that point is in delivery order, so a replay appends to it: one by archived seq
    was written in the middle for every replay of a window already replayed (150 to 430 more
    bytes per replayed event with 1 to 5 replays of one archive waiting; docs/storage.md).
    """
    conn.execute(
        "CREATE INDEX IF NOT EXISTS deliveries_pointing ON deliveries (id, archived)"
        " WHERE archived IS NOT NULL"
    )


def give_archived_bytes(conn: sqlite3.Connection, seqs: Collection[int]) -> None:
    """Before the archived copies `seqs` go (retention, a dropped archive, an erasure): the
    deliveries that point at them take their bytes, so no delivery loses its payload. (An
    erasure removes those deliveries too, by the same match.) One walk of the pointing
    deliveries, however many copies go."""
    going = set(seqs)
    ids = [
        delivery_id
        for delivery_id, archived in conn.execute(
            "SELECT id, archived FROM deliveries INDEXED BY deliveries_pointing"
            " WHERE archived IS NOT NULL"
        )
        if archived in going
    ]
    conn.executemany(
        "UPDATE deliveries SET payload = CAST(substr((SELECT a.body FROM archived AS a"
        " WHERE a.seq = deliveries.archived), 1, archived_kept) || payload AS BLOB),"
        " archived = NULL, archived_kept = NULL WHERE id = ?",
        [(delivery_id,) for delivery_id in ids],
    )

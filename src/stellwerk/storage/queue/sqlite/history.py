"""The embedded delivery history: attempts in a table beside the deliveries (pipeline.db).

Attempts are written inside the write that settles them (an ack batch, a retry, a dead letter),
so history adds rows to a commit that happens anyway and never a commit of its own. Reads run
on a reader connection.

The event index is kept cheap to write: event ids are mostly random (UUIDs), and an index on
them takes each new row to a random page, so that a batch of 256 attempts dirtied about as many
pages and the commit wrote them all (measured: two thirds of what history cost). Instead each
row carries `event_key`, its id's bucket of `BUCKET` ids in the high bits and a CRC-32 of the
event id in the low ones: a batch's keys fall within one or two buckets, a few pages. A lookup
probes every bucket the table spans (`buckets = ids / 4096`, 245 for a million attempts) and
keeps the rows whose event id is the one asked for.
"""

from __future__ import annotations

import sqlite3
import zlib
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from stellwerk.clock import from_us, to_us
from stellwerk.refs import BusRef
from stellwerk.seams import ATTEMPT_OUTCOMES, Attempt, AttemptOutcome, RecordedAttempt, TargetKey

if TYPE_CHECKING:
    from stellwerk.storage.queue.sqlite.index import QueueIndex

DDL: Final = (
    # outcome: the index of the attempt's outcome in `ATTEMPT_OUTCOMES`.
    """CREATE TABLE IF NOT EXISTS attempts (
        id INTEGER PRIMARY KEY,
        target INTEGER NOT NULL,
        event_id TEXT NOT NULL,
        event_key INTEGER NOT NULL DEFAULT 0,
        position INTEGER NOT NULL,
        attempt INTEGER NOT NULL,
        started_us INTEGER NOT NULL,
        duration_us INTEGER NOT NULL,
        outcome INTEGER NOT NULL,
        status INTEGER,
        error TEXT,
        excerpt TEXT NOT NULL DEFAULT ''
    )""",
    "CREATE INDEX IF NOT EXISTS attempts_by_target ON attempts (target, id)",
)
EVENT_INDEX: Final = "CREATE INDEX IF NOT EXISTS attempts_by_event_key ON attempts (event_key)"
BUCKET_BITS: Final = 12  # ids per bucket of the event index: 4096
_INSERT: Final = (
    "INSERT INTO attempts (id, target, event_id, event_key, position, attempt, started_us,"
    " duration_us, outcome, status, error, excerpt) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_COLUMNS: Final = (
    "a.id, t.rule, t.target_id, a.event_id, a.position, a.attempt, a.started_us,"
    " a.duration_us, a.outcome, a.status, a.error, a.excerpt"
)
_OUTCOME_CODES: Final = {outcome: code for code, outcome in enumerate(ATTEMPT_OUTCOMES)}


def event_key(attempt_id: int, event_id: str) -> int:
    """The event index's key of an attempt: its id's bucket, then the event id's CRC-32."""
    crc = zlib.crc32(event_id.encode("utf-8", "surrogatepass"))
    return ((attempt_id >> BUCKET_BITS) << 32) | crc


def create(conn: sqlite3.Connection) -> None:
    for statement in DDL:
        conn.execute(statement)
    columns = {row[1] for row in conn.execute("PRAGMA table_info(attempts)")}
    if "event_key" not in columns:  # a file from before the bucketed event index
        conn.execute("ALTER TABLE attempts ADD COLUMN event_key INTEGER NOT NULL DEFAULT 0")
        rows = conn.execute("SELECT id, event_id FROM attempts").fetchall()
        conn.executemany(
            "UPDATE attempts SET event_key = ? WHERE id = ?",
            [(event_key(attempt_id, event_id), attempt_id) for attempt_id, event_id in rows],
        )
    conn.execute("DROP INDEX IF EXISTS attempts_by_event")
    conn.execute(EVENT_INDEX)


def record(conn: sqlite3.Connection, index: QueueIndex, attempts: Sequence[Attempt]) -> None:
    """Insert the attempts, in the writer's transaction.

    Runs per attempt in the writer thread (the ack batch's), so it is kept lean: a batch's
    attempts are mostly of one target, whose integer id is looked up once per run of them."""
    if not attempts:
        return
    known = index.target_ids
    codes = _OUTCOME_CODES
    last: tuple[str, str, str, str] | None = None
    target = 0
    rows = []
    # Ids given here, so that each row's event key has its bucket (the writer is alone).
    (attempt_id,) = conn.execute("SELECT coalesce(max(id), 0) FROM attempts").fetchone()
    for a in attempts:
        attempt_id += 1
        key = (a.tenant, a.bus, a.rule, a.target_id)
        if key != last:
            # A plain tuple finds a `TargetKey` (a named tuple hashes and compares as one).
            found = known.get(key)  # type: ignore[call-overload]
            target = found if found is not None else index.target(conn, TargetKey(*key))
            last = key
        rows.append(
            (attempt_id, target, a.event_id,
             ((attempt_id >> BUCKET_BITS) << 32)
             | zlib.crc32(a.event_id.encode("utf-8", "surrogatepass")),
             a.position, a.attempt, to_us(a.started), a.duration_us, codes[a.outcome],
             a.status, a.error, a.excerpt)
        )  # fmt: skip
    conn.executemany(_INSERT, rows)


TRIM_CHUNK: Final = 10_000


def trim_bound(conn: sqlite3.Connection, older_than_us: int) -> int:
    """The id below which every attempt started before `older_than_us`.

    Ids follow the order attempts were written, nearly that of their start: an attempt written
    later but started earlier (a slow one) stays until the next trim, which costs nothing
    while the search stops at the first attempt young enough instead of reading the table.
    """
    (bound,) = conn.execute(
        "SELECT coalesce((SELECT min(id) FROM attempts WHERE started_us >= ?),"
        " (SELECT max(id) + 1 FROM attempts), 0)",
        (older_than_us,),
    ).fetchone()
    return int(bound)


def trim_chunk(conn: sqlite3.Connection, bound: int) -> int:
    """Delete up to `TRIM_CHUNK` attempts with ids below `bound`; how many."""
    return conn.execute(
        "DELETE FROM attempts WHERE id IN (SELECT id FROM attempts WHERE id < ? ORDER BY id"
        " LIMIT ?)",
        (bound, TRIM_CHUNK),
    ).rowcount


ERASE_PAGE: Final = 1000  # attempts an erasure looks at per read


def erase_page(
    conn: sqlite3.Connection, tenant: str, bus: str | None, after: tuple[int, int]
) -> list[tuple[int, int, str, int, str | None, str]]:
    """The tenant's next attempts after (target, id), in that order, by the target index:
    target, id, bus, position, error, excerpt."""
    target, after_id = after
    return conn.execute(
        "SELECT a.target, a.id, t.bus, a.position, a.error, a.excerpt"
        " FROM targets AS t JOIN attempts AS a ON a.target = t.target"
        " WHERE t.tenant = ? AND (? IS NULL OR t.bus = ?)"
        " AND (a.target > ? OR (a.target = ? AND a.id > ?))"
        " ORDER BY a.target, a.id LIMIT ?",
        (tenant, bus, bus, target, target, after_id, ERASE_PAGE),
    ).fetchall()


def erase_ids(conn: sqlite3.Connection, ids: Sequence[int]) -> int:
    return sum(
        conn.execute("DELETE FROM attempts WHERE id = ?", (attempt_id,)).rowcount
        for attempt_id in ids
    )


def event_attempts(conn: sqlite3.Connection, bus: BusRef, event_id: str) -> list[RecordedAttempt]:
    low, high = conn.execute("SELECT min(id), max(id) FROM attempts").fetchone()
    if low is None:
        return []
    # One probe of the event index per bucket the table spans (see the module's docstring).
    rows = conn.execute(
        "WITH RECURSIVE probe(key) AS (SELECT :first UNION ALL"
        " SELECT key + 4294967296 FROM probe WHERE key < :last)"
        f" SELECT {_COLUMNS} FROM probe CROSS JOIN attempts AS a ON a.event_key = probe.key"
        " JOIN targets AS t ON t.target = a.target"
        " WHERE a.event_id = :event AND t.tenant = :tenant AND t.bus = :bus ORDER BY a.id",
        {
            "first": event_key(low, event_id),
            "last": event_key(high, event_id),
            "event": event_id,
            "tenant": bus.tenant,
            "bus": bus.bus,
        },
    ).fetchall()
    return [_recorded(bus, row) for row in rows]


def target_attempts(
    conn: sqlite3.Connection,
    bus: BusRef,
    rule: str,
    target_id: str,
    since: datetime | None,
    until: datetime | None,
    outcome: AttemptOutcome | None,
    after: int,
    limit: int,
) -> list[RecordedAttempt]:
    found = conn.execute(
        "SELECT target FROM targets WHERE tenant = ? AND bus = ? AND rule = ? AND target_id = ?",
        (bus.tenant, bus.bus, rule, target_id),
    ).fetchone()
    if found is None:
        return []
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM attempts AS a JOIN targets AS t ON t.target = a.target"
        " WHERE a.target = :target AND a.id > :after"
        " AND (:since IS NULL OR a.started_us >= :since)"
        " AND (:until IS NULL OR a.started_us < :until)"
        " AND (:outcome IS NULL OR a.outcome = :outcome)"
        " ORDER BY a.id LIMIT :limit",
        {
            "target": found[0],
            "after": after,
            "since": None if since is None else to_us(since),
            "until": None if until is None else to_us(until),
            "outcome": None if outcome is None else _OUTCOME_CODES[outcome],
            "limit": limit,
        },
    ).fetchall()
    return [_recorded(bus, row) for row in rows]


def _recorded(bus: BusRef, row: Any) -> RecordedAttempt:
    (id_, rule, target_id, event_id, position, attempt, started_us, duration_us, outcome,
     status, error, excerpt) = row  # fmt: skip
    return RecordedAttempt(
        id=id_,
        attempt=Attempt(
            tenant=bus.tenant,
            bus=bus.bus,
            rule=rule,
            target_id=target_id,
            event_id=event_id,
            position=position,
            attempt=attempt,
            started=from_us(started_us),
            duration_us=duration_us,
            outcome=ATTEMPT_OUTCOMES[outcome],
            status=status,
            error=error,
            excerpt=excerpt,
        ),
    )

"""The embedded delivery history: attempts in a table beside the deliveries (pipeline.db).

Attempts are written inside the write that settles them (an ack batch, a retry, a dead letter),
so history adds rows to a commit that happens anyway and never a commit of its own. Reads run
on a reader connection.
"""

from __future__ import annotations

import sqlite3
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
        position INTEGER NOT NULL,
        attempt INTEGER NOT NULL,
        started_us INTEGER NOT NULL,
        duration_us INTEGER NOT NULL,
        outcome INTEGER NOT NULL,
        status INTEGER,
        error TEXT,
        excerpt TEXT NOT NULL DEFAULT ''
    )""",
    "CREATE INDEX IF NOT EXISTS attempts_by_event ON attempts (event_id)",
    "CREATE INDEX IF NOT EXISTS attempts_by_target ON attempts (target, id)",
)
_INSERT: Final = (
    "INSERT INTO attempts (target, event_id, position, attempt, started_us, duration_us,"
    " outcome, status, error, excerpt) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_COLUMNS: Final = (
    "a.id, t.rule, t.target_id, a.event_id, a.position, a.attempt, a.started_us,"
    " a.duration_us, a.outcome, a.status, a.error, a.excerpt"
)
_OUTCOME_CODES: Final = {outcome: code for code, outcome in enumerate(ATTEMPT_OUTCOMES)}


def create(conn: sqlite3.Connection) -> None:
    for statement in DDL:
        conn.execute(statement)


def record(conn: sqlite3.Connection, index: QueueIndex, attempts: Sequence[Attempt]) -> None:
    """Insert the attempts, in the writer's transaction."""
    if not attempts:
        return
    conn.executemany(
        _INSERT,
        [
            (
                index.target(conn, TargetKey(a.tenant, a.bus, a.rule, a.target_id)),
                a.event_id,
                a.position,
                a.attempt,
                to_us(a.started),
                a.duration_us,
                _OUTCOME_CODES[a.outcome],
                a.status,
                a.error,
                a.excerpt,
            )
            for a in attempts
        ],
    )


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
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM attempts AS a JOIN targets AS t ON t.target = a.target"
        " WHERE a.event_id = ? AND t.tenant = ? AND t.bus = ? ORDER BY a.id",
        (event_id, bus.tenant, bus.bus),
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

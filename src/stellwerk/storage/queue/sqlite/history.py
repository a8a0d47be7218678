"""The embedded delivery history: attempts packed in groups beside the deliveries (pipeline.db).

Attempts are written inside the write that settles them (an ack batch, a retry, a dead letter),
so history adds to a commit that happens anyway and never a commit of its own. Reads run on a
reader connection.

What one row per attempt cost was mostly SQLite's: the row and its two index entries, and the
pages the commit wrote for them (about 3 µs per attempt at best, 28 % of a no-op delivery). So
the attempts a write settles become one row, a group (`attempt_groups`): their fields packed
as one MessagePack array of arrays (`body`), and the CRC-32s of their event ids, four bytes
each (`crcs`). A group's attempts have the ids `id .. id + count - 1`, given by the writer (it
is alone). The two lookups stay cheap without a per-attempt index entry:

- an event's attempts: `instr` over the groups' `crcs` (4 bytes per attempt, 4 MB for a million
  attempts, scanned in SQLite's C) picks the few groups that may hold the event; only those are
  decoded, and the entries whose event id is the one asked for are kept;
- a target's attempts: `attempt_group_targets` has one entry per (target, group), a few per
  write, so a target's page reads the groups it appears in, in order, and skips, with
  `started_max_us`, those that ended before `since`.

An erased attempt's entry becomes `nil` (its id stays taken); retention removes whole groups.
A file with the former table of one row per attempt is converted when the queue opens it; a
group written before starts became relative to the group's first is read as it is.
"""

from __future__ import annotations

import sqlite3
import struct
import zlib
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

import msgspec

from stellwerk.clock import to_us
from stellwerk.refs import BusRef
from stellwerk.seams import ATTEMPT_OUTCOMES, Attempt, AttemptOutcome, RecordedAttempt, TargetKey

if TYPE_CHECKING:
    from stellwerk.storage.queue.sqlite.index import QueueIndex

DDL: Final = (
    """CREATE TABLE IF NOT EXISTS attempt_groups (
        id INTEGER PRIMARY KEY,
        count INTEGER NOT NULL,
        started_min_us INTEGER NOT NULL,
        started_max_us INTEGER NOT NULL,
        outcomes INTEGER NOT NULL,
        body BLOB NOT NULL
    )""",
    # Apart from the bodies, so that the event page's sieve reads 4 bytes per attempt.
    "CREATE TABLE IF NOT EXISTS attempt_crcs (id INTEGER PRIMARY KEY, crcs BLOB NOT NULL)",
    """CREATE TABLE IF NOT EXISTS attempt_group_targets (
        target INTEGER NOT NULL,
        group_id INTEGER NOT NULL,
        PRIMARY KEY (target, group_id)
    ) WITHOUT ROWID""",
)
# An entry of `body`: target (the queue's integer id), event id, position, attempt, started
# (µs), duration (µs), outcome (its index in `ATTEMPT_OUTCOMES`), status, error, excerpt.
# `body` is `[base, entry, ...]`: each entry's start is kept as µs after `base` (3 to 5 bytes
# instead of 9). A group written before that is `[entry, ...]` with whole starts (`_unpack`).
Entry = tuple[int, str, int, int, int, int, int, "int | None", "str | None", str]
_ENCODE: Final = msgspec.msgpack.Encoder().encode
_DECODE: Final = msgspec.msgpack.Decoder(list[Any]).decode
_OUTCOME_CODES: Final = {outcome: code for code, outcome in enumerate(ATTEMPT_OUTCOMES)}
_LEGACY_GROUP: Final = 256  # ids per group when a one-row-per-attempt table is converted


def _crc(event_id: str) -> int:
    # surrogatepass: an id with a lone surrogate has bytes too (JSON can carry one).
    return zlib.crc32(event_id.encode("utf-8", "surrogatepass"))


def create(conn: sqlite3.Connection) -> None:
    for statement in DDL:
        conn.execute(statement)
    legacy = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'attempts'"
    ).fetchone()
    if legacy is not None:
        _convert(conn)


def _convert(conn: sqlite3.Connection) -> None:
    """Pack a former `attempts` table (one row per attempt) into groups, keeping the ids."""
    rows = conn.execute(
        "SELECT id, target, event_id, position, attempt, started_us, duration_us, outcome,"
        " status, error, excerpt FROM attempts ORDER BY id"
    )
    group: list[Entry | None] = []
    first = 0
    for attempt_id, *fields in rows:
        if group and attempt_id >= first + _LEGACY_GROUP:
            _insert(conn, first, group)
            group = []
        if not group:
            first = attempt_id
        group.extend([None] * (attempt_id - first - len(group)))
        group.append(tuple(fields))
    if group:
        _insert(conn, first, group)
    conn.execute("DROP TABLE attempts")


def _insert(conn: sqlite3.Connection, first: int, entries: Sequence[Entry | None]) -> None:
    live = [e for e in entries if e is not None]
    crcs = [0 if e is None else _crc(e[1]) for e in entries]
    started = [e[4] for e in live] or [0]
    outcomes = 0
    for e in live:
        outcomes |= 1 << e[6]
    body = _pack(entries)
    targets = {e[0] for e in live}
    _write(conn, first, len(entries), body, crcs, (min(started), max(started)), outcomes, targets)


def _pack(entries: Sequence[Sequence[Any] | None]) -> bytes:
    """A group's body from entries with whole start times."""
    base = min((e[4] for e in entries if e is not None), default=0)
    return _ENCODE([base, *(None if e is None else [*e[:4], e[4] - base, *e[5:]] for e in entries)])


def _unpack(body: bytes) -> list[Any]:
    """A group's entries (lists, or None where erased) with whole start times, from either
    layout of the body."""
    entries = _DECODE(body)
    if entries and type(entries[0]) is int:
        base = entries.pop(0)
        for e in entries:
            if e is not None:
                e[4] += base
    return entries


def _write(
    conn: sqlite3.Connection,
    first: int,
    count: int,
    body: bytes,
    crcs: Sequence[int],
    started: tuple[int, int],
    outcomes: int,
    targets: set[int],
) -> None:
    conn.execute(
        "INSERT INTO attempt_groups (id, count, started_min_us, started_max_us, outcomes, body)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (first, count, started[0], started[1], outcomes, body),
    )
    conn.execute(
        "INSERT INTO attempt_crcs (id, crcs) VALUES (?, ?)",
        (first, struct.pack(f">{len(crcs)}I", *crcs)),
    )
    conn.executemany(
        "INSERT INTO attempt_group_targets (target, group_id) VALUES (?, ?)",
        [(target, first) for target in targets],
    )


def record(conn: sqlite3.Connection, index: QueueIndex, attempts: Sequence[Attempt]) -> None:
    """Write the attempts as one group, in the writer's transaction.

    Runs per attempt in the writer thread (the ack batch's), so it is kept lean: one tuple and
    one CRC per attempt, a batch's target ids looked up once per run of one target, the start
    times taken as the integers they are, one encode call."""
    if not attempts:
        return
    known = index.target_ids
    codes = _OUTCOME_CODES
    crc32 = zlib.crc32
    last: tuple[str, str, str, str] | None = None
    target = 0
    # Starts relative to the first attempt's (a few may be before it: the body allows that).
    base = attempts[0].started_us
    body: list[Any] = [base]
    crcs: list[int] = []
    targets: set[int] = set()
    outcomes = 0
    for a in attempts:
        key = (a.tenant, a.bus, a.rule, a.target_id)
        if key != last:
            # A plain tuple finds a `TargetKey` (a named tuple hashes and compares as one).
            found = known.get(key)  # type: ignore[call-overload]
            target = found if found is not None else index.target(conn, TargetKey(*key))
            targets.add(target)
            last = key
        code = codes[a.outcome]
        outcomes |= 1 << code
        event_id = a.event_id
        try:
            crcs.append(crc32(event_id.encode()))
        except UnicodeEncodeError:  # a lone surrogate: the bytes `_crc` hashes
            crcs.append(_crc(event_id))
        body.append(
            (target, event_id, a.position, a.attempt, a.started_us - base, a.duration_us, code,
             a.status, a.error, a.excerpt)
        )  # fmt: skip
    started = [e[4] for e in body[1:]]
    found_last = conn.execute(
        "SELECT id + count FROM attempt_groups ORDER BY id DESC LIMIT 1"
    ).fetchone()
    first = 1 if found_last is None else found_last[0]
    bounds = (base + min(started), base + max(started))
    _write(conn, first, len(attempts), _ENCODE(body), crcs, bounds, outcomes, targets)


TRIM_CHUNK: Final = 10_000  # attempts, about, per write


def trim_bound(conn: sqlite3.Connection, older_than_us: int) -> int:
    """The id below which every attempt started before `older_than_us`: the first group with
    an attempt young enough (groups follow the order they were written, nearly that of their
    attempts' starts: a slow one written later stays until the next trim)."""
    (bound,) = conn.execute(
        "SELECT coalesce((SELECT min(id) FROM attempt_groups WHERE started_max_us >= ?),"
        " (SELECT max(id) + 1 FROM attempt_groups), 0)",
        (older_than_us,),
    ).fetchone()
    return int(bound)


def trim_chunk(conn: sqlite3.Connection, bound: int) -> int:
    """Delete the oldest groups below `bound`, about `TRIM_CHUNK` attempts; how many entries."""
    groups = conn.execute(
        "SELECT id, count FROM attempt_groups WHERE id < ? ORDER BY id LIMIT ?",
        (bound, TRIM_CHUNK),
    ).fetchall()
    taken = 0
    last = 0
    for group_id, count in groups:
        taken += count
        last = group_id
        if taken >= TRIM_CHUNK:
            break
    if not taken:
        return 0
    conn.execute("DELETE FROM attempt_groups WHERE id <= ?", (last,))
    conn.execute("DELETE FROM attempt_crcs WHERE id <= ?", (last,))
    conn.execute("DELETE FROM attempt_group_targets WHERE group_id <= ?", (last,))
    return taken


ERASE_PAGE: Final = 100  # groups an erasure looks at per read


def erase_page(
    conn: sqlite3.Connection, tenant: str, bus: str | None, after: int
) -> tuple[int | None, list[tuple[int, str, int, str | None, str]]]:
    """The tenant's (or bus's) attempts in the next groups after the group `after`: the last
    group read (None at the end), and each attempt's id, bus, position, error and excerpt."""
    mine: dict[int, str] = dict(
        conn.execute(
            "SELECT target, bus FROM targets WHERE tenant = ? AND (? IS NULL OR bus = ?)",
            (tenant, bus, bus),
        )
    )
    if not mine:
        return None, []
    groups = conn.execute(
        "SELECT id, body FROM attempt_groups WHERE id IN (SELECT DISTINCT group_id FROM"
        " attempt_group_targets WHERE target IN (SELECT value FROM json_each(?)) AND group_id > ?)"
        " ORDER BY id LIMIT ?",
        (msgspec.json.encode(list(mine)).decode(), after, ERASE_PAGE),
    ).fetchall()
    if not groups:
        return None, []
    found = [
        (attempt_id, mine[e[0]], e[2], e[8], e[9])
        for attempt_id, e in _entries(groups)
        if e[0] in mine
    ]
    return groups[-1][0], found


def erase_ids(conn: sqlite3.Connection, ids: Sequence[int]) -> int:
    """Blank the attempts' entries (their groups are rewritten: `secure_delete` is on)."""
    erased = 0
    for attempt_id in sorted(set(ids)):
        row = conn.execute(
            "SELECT g.id, g.count, c.crcs, g.body FROM attempt_groups AS g"
            " JOIN attempt_crcs AS c ON c.id = g.id WHERE g.id <= ? ORDER BY g.id DESC LIMIT 1",
            (attempt_id,),
        ).fetchone()
        if row is None or attempt_id >= row[0] + row[1]:
            continue
        first, _, crcs, body = row
        entries = _unpack(body)
        at = attempt_id - first
        if entries[at] is None:
            continue
        entries[at] = None
        crcs = crcs[: at * 4] + b"\0\0\0\0" + crcs[at * 4 + 4 :]
        conn.execute("UPDATE attempt_groups SET body = ? WHERE id = ?", (_pack(entries), first))
        conn.execute("UPDATE attempt_crcs SET crcs = ? WHERE id = ?", (crcs, first))
        erased += 1
    return erased


def _entries(groups: Sequence[tuple[int, bytes]]) -> Iterator[tuple[int, list[Any]]]:
    for first, body in groups:
        for at, entry in enumerate(_unpack(body)):
            if entry is not None:
                yield first + at, entry


def _bus_targets(conn: sqlite3.Connection, bus: BusRef) -> dict[int, tuple[str, str]]:
    return {
        target: (rule, target_id)
        for target, rule, target_id in conn.execute(
            "SELECT target, rule, target_id FROM targets WHERE tenant = ? AND bus = ?",
            (bus.tenant, bus.bus),
        )
    }


def event_attempts(conn: sqlite3.Connection, bus: BusRef, event_id: str) -> list[RecordedAttempt]:
    crc = _crc(event_id)
    probe = struct.pack(">I", crc)
    # `instr` is only a first sieve (a match may straddle two CRCs): the event ids decide.
    groups = conn.execute(
        "SELECT g.id, g.body FROM attempt_crcs AS c JOIN attempt_groups AS g ON g.id = c.id"
        " WHERE instr(c.crcs, ?) > 0 ORDER BY c.id",
        (probe,),
    ).fetchall()
    if not groups:
        return []
    targets = _bus_targets(conn, bus)
    return [
        _recorded(bus, attempt_id, targets[e[0]], e)
        for attempt_id, e in _entries(groups)
        if e[1] == event_id and e[0] in targets
    ]


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
    target = found[0]
    since_us = None if since is None else to_us(since)
    until_us = None if until is None else to_us(until)
    code = None if outcome is None else _OUTCOME_CODES[outcome]
    groups = conn.execute(
        "SELECT g.id, g.body FROM attempt_group_targets AS gt"
        " JOIN attempt_groups AS g ON g.id = gt.group_id"
        " WHERE gt.target = :target AND g.id + g.count > :after AND gt.group_id >= coalesce("
        "(SELECT id FROM attempt_groups WHERE id <= :after ORDER BY id DESC LIMIT 1), 0)"
        " AND (:since IS NULL OR g.started_max_us >= :since)"
        " AND (:until IS NULL OR g.started_min_us < :until)"
        " AND (:code IS NULL OR g.outcomes & (1 << :code)) ORDER BY gt.group_id",
        {"target": target, "after": after, "since": since_us, "until": until_us, "code": code},
    )
    page: list[RecordedAttempt] = []
    names = (rule, target_id)
    for group in groups:
        for attempt_id, e in _entries([group]):
            if (
                e[0] == target
                and attempt_id > after
                and (since_us is None or e[4] >= since_us)
                and (until_us is None or e[4] < until_us)
                and (code is None or e[6] == code)
            ):
                page.append(_recorded(bus, attempt_id, names, e))
                if len(page) == limit:
                    return page
    return page


def _recorded(
    bus: BusRef, attempt_id: int, names: tuple[str, str], e: list[Any]
) -> RecordedAttempt:
    _, event_id, position, attempt, started_us, duration_us, outcome, status, error, excerpt = e
    return RecordedAttempt(
        id=attempt_id,
        attempt=Attempt(
            tenant=bus.tenant,
            bus=bus.bus,
            rule=names[0],
            target_id=names[1],
            event_id=event_id,
            position=position,
            attempt=attempt,
            started_us=started_us,
            duration_us=duration_us,
            outcome=ATTEMPT_OUTCOMES[outcome],
            status=status,
            error=error,
            excerpt=excerpt,
        ),
    )

"""The embedded archive store: archived copies and archivers' cursors in their own SQLite file.

One writer thread, readers in a small pool (WAL); a row per copy, because erasure removes single
events. Tables and why they are shaped so: docs/storage.md.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Final, TypeVar

from stellwerk.clock import EPOCH, from_us, to_us
from stellwerk.seams import (
    ArchivedEvent,
    ArchiveEraseMatch,
    ArchiveStats,
    ArchiveStoreClosed,
    ArchiveStoreError,
    StoredEvent,
)
from stellwerk.storage.archive.contract import CheckedArchiveStore, check_archive_cursor
from stellwerk.storage.sqlite import InsertRows

DELETE_CHUNK: Final = 10_000
_T = TypeVar("_T")

_DDL: Final = (
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
    """CREATE TABLE IF NOT EXISTS cursors (
        tenant TEXT NOT NULL,
        bus TEXT NOT NULL,
        position INTEGER NOT NULL,
        PRIMARY KEY (tenant, bus)
    ) WITHOUT ROWID""",
)

_COLUMNS: Final = "seq, position, recorded_us, id, source, type, subject, body"
_AID: Final = "SELECT aid FROM archives WHERE uid = ?"
_CURSOR: Final = "SELECT position FROM cursors WHERE tenant = ? AND bus = ?"
_SET_CURSOR: Final = (
    "INSERT INTO cursors (tenant, bus, position) VALUES (?, ?, ?)"
    " ON CONFLICT (tenant, bus) DO UPDATE SET position = excluded.position"
)
_INSERT: Final = InsertRows(
    "INSERT INTO archived (aid, position, recorded_us, id, source, type, subject, body)"
)
_ADD_TOTALS: Final = "UPDATE archives SET events = events + ?, bytes = bytes + ? WHERE aid = ?"
_READ_FROM_START: Final = f"""
    SELECT {_COLUMNS} FROM archived
    WHERE aid = ? AND recorded_us >= ? AND recorded_us < ? AND seq > ?
    ORDER BY recorded_us, seq LIMIT ?
"""
_READ_AFTER: Final = f"""
    SELECT {_COLUMNS} FROM archived
    WHERE aid = ? AND (recorded_us, seq) > (?, ?) AND recorded_us >= ? AND recorded_us < ?
    ORDER BY recorded_us, seq LIMIT ?
"""
# The recorded time of the archive's event at `after_seq`, or of the last before it if that one
# is gone: every later event of the archive was recorded no earlier. `+aid` keeps SQLite off
# the time index (which would sort the whole archive) and on a short walk back by rowid.
_ANCHOR: Final = (
    "SELECT recorded_us FROM archived WHERE seq <= ? AND +aid = ? ORDER BY seq DESC LIMIT 1"
)
_COUNT: Final = (
    "SELECT count(*) FROM archived WHERE aid = ? AND recorded_us >= ? AND recorded_us < ?"
)
_DELETE_OLDER: Final = """
    DELETE FROM archived WHERE seq IN (
        SELECT seq FROM archived WHERE aid = ? AND recorded_us < ? ORDER BY recorded_us LIMIT ?)
    RETURNING length(body)
"""
# The whole archive by its index; and the few events archived since a scan, by rowid.
_CANDIDATES: Final = f"""
    SELECT {_COLUMNS} FROM archived WHERE aid = ? AND seq > ? AND instr(body, ?) > 0
"""
_LATE_CANDIDATES: Final = f"""
    SELECT {_COLUMNS} FROM archived WHERE +aid = ? AND seq > ? AND instr(body, ?) > 0
"""
_DELETE_SEQ: Final = "DELETE FROM archived WHERE seq = ? RETURNING length(body)"


def _connect(path: Path, *, writer: bool) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit).

    `synchronous=FULL` makes an archived batch and its cursor durable against power loss: the
    archiver never looks at those events again once the cursor has moved.
    """
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute("PRAGMA synchronous = FULL")
    if writer:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            conn.close()
            raise sqlite3.OperationalError(f"{path} cannot be put in WAL mode (got {mode})")
        conn.execute("PRAGMA journal_size_limit = 67108864")
        # Erased (and trimmed) copies are overwritten with zeros, not left in free pages: an
        # erasure must not leave a person's data readable in the file. Not every SQLite build
        # has this on by default.
        conn.execute("PRAGMA secure_delete = ON")
        for statement in _DDL:
            conn.execute(statement)
    else:
        conn.execute("PRAGMA query_only = ON")
    return conn


class _Rows:
    """Turns rows of `_COLUMNS` into `ArchivedEvent`s, converting each recorded time once."""

    def __init__(self, uid: str) -> None:
        self._uid = uid
        self._us = -1
        self._time = EPOCH

    def event(self, row: tuple[int, int, int, str, str, str, str | None, bytes]) -> ArchivedEvent:
        seq, position, recorded_us, event_id, source, event_type, subject, body = row
        if recorded_us != self._us:  # events of one log group share their recorded time
            self._us, self._time = recorded_us, from_us(recorded_us)
        return ArchivedEvent(
            self._uid, seq, position, event_id, source, event_type, subject, self._time, body
        )


class SqliteArchiveStore(CheckedArchiveStore):
    """The `ArchiveStore` on one file: `SqliteArchiveStore(data_dir / ARCHIVES_FILE)`."""

    def __init__(self, path: str | Path, *, readers: int = 2) -> None:
        self.path = Path(path)
        self._readers = readers
        self._write_conn: sqlite3.Connection | None = None
        self._writer: ThreadPoolExecutor | None = None
        self._reader: ThreadPoolExecutor | None = None
        self._reader_local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._reader_lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._writer is not None:
            raise ArchiveStoreError("the archive store was already started")
        self._write_conn = await asyncio.to_thread(_connect, self.path, writer=True)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="archives-write")
        self._reader = ThreadPoolExecutor(self._readers, thread_name_prefix="archives-read")

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        reader, self._reader = self._reader, None
        if writer is None:
            return
        await asyncio.to_thread(writer.shutdown, wait=True)
        if reader is not None:
            await asyncio.to_thread(reader.shutdown, wait=True)
        for conn in self._reader_conns:
            conn.close()
        self._reader_conns.clear()
        if self._write_conn is not None:
            self._write_conn.close()
            self._write_conn = None

    async def ping(self) -> None:
        await self._read(lambda conn: conn.execute("SELECT 1").fetchone())
        await self._write(lambda conn: conn.execute("SELECT 1").fetchone())

    # -- the archiver's side -------------------------------------------------------------------

    async def cursor(self, tenant: str, bus: str) -> int:
        def query(conn: sqlite3.Connection) -> int:
            row = conn.execute(_CURSOR, (tenant, bus)).fetchone()
            return int(row[0]) if row else 0

        return await self._read(query)

    async def _archive(
        self, tenant: str, bus: str, position: int, entries: Sequence[tuple[str, StoredEvent]]
    ) -> None:
        # In position order, so that `seq` follows position within each archive.
        ordered = sorted(entries, key=lambda entry: entry[1].position)

        def work(conn: sqlite3.Connection) -> None:
            row = conn.execute(_CURSOR, (tenant, bus)).fetchone()
            current = int(row[0]) if row else 0
            check_archive_cursor(tenant, bus, current, position, ordered)
            totals: dict[int, list[int]] = {}
            rows = []
            aids: dict[str, int] = {}
            for uid, event in ordered:
                aid = aids.get(uid)
                if aid is None:
                    aid = aids[uid] = _new_aid(conn, uid)
                    totals[aid] = [0, 0]
                counts = totals[aid]
                counts[0] += 1
                counts[1] += len(event.body)
                rows.append(
                    (aid, event.position, to_us(event.recorded_time), event.id, event.source,
                     event.type, event.subject, event.body)
                )  # fmt: skip
            _INSERT(conn, rows)
            conn.executemany(_ADD_TOTALS, [(n, size, aid) for aid, (n, size) in totals.items()])
            conn.execute(_SET_CURSOR, (tenant, bus, position))

        await self._write(work)

    # -- reading -------------------------------------------------------------------------------

    async def _read_window(
        self, uid: str, start: datetime, end: datetime, after_seq: int, limit: int
    ) -> list[ArchivedEvent]:
        start_us, end_us = to_us(start), to_us(end)

        def query(conn: sqlite3.Connection) -> list[ArchivedEvent]:
            aid = _aid(conn, uid)
            if aid is None or start_us >= end_us:
                return []
            rows = _Rows(uid)
            anchor = conn.execute(_ANCHOR, (after_seq, aid)).fetchone() if after_seq else None
            if anchor is None:
                found = conn.execute(_READ_FROM_START, (aid, start_us, end_us, after_seq, limit))
            else:
                found = conn.execute(
                    _READ_AFTER, (aid, anchor[0], after_seq, start_us, end_us, limit)
                )
            return [rows.event(r) for r in found]

        return await self._read(query)

    async def count_window(self, uid: str, start: datetime, end: datetime) -> int:
        start_us, end_us = to_us(start), to_us(end)

        def query(conn: sqlite3.Connection) -> int:
            aid = _aid(conn, uid)
            if aid is None:
                return 0
            return int(conn.execute(_COUNT, (aid, start_us, end_us)).fetchone()[0])

        return await self._read(query)

    async def stats(self, uids: Sequence[str]) -> dict[str, ArchiveStats]:
        wanted = list(dict.fromkeys(uids))

        def query(conn: sqlite3.Connection) -> dict[str, ArchiveStats]:
            out = {uid: ArchiveStats(0, 0) for uid in wanted}
            for uid in wanted:
                row = conn.execute(
                    "SELECT events, bytes FROM archives WHERE uid = ?", (uid,)
                ).fetchone()
                if row is not None:
                    out[uid] = ArchiveStats(int(row[0]), int(row[1]))
            return out

        return await self._read(query)

    # -- removing ------------------------------------------------------------------------------

    async def trim(self, uid: str, older_than: datetime) -> int:
        cut_us = to_us(older_than)
        total = 0
        while True:
            removed = await self._write(lambda conn: _delete_chunk(conn, uid, cut_us))
            total += removed
            if removed < DELETE_CHUNK:
                return total

    async def drop(self, uid: str) -> int:
        total = 0
        while True:
            removed = await self._write(lambda conn: _delete_chunk(conn, uid, 2**63 - 1))
            total += removed
            if removed < DELETE_CHUNK:
                break
        await self._write(lambda conn: conn.execute("DELETE FROM archives WHERE uid = ?", (uid,)))
        return total

    async def _erase(
        self, uids: Sequence[str], needle: bytes, matches: ArchiveEraseMatch
    ) -> list[ArchivedEvent]:
        """Find candidates on a reader (a long scan), then remove them on the writer.

        The writer looks again at what was archived after the reader's snapshot, so an event
        archived meanwhile is not missed.
        """
        wanted = list(dict.fromkeys(uids))

        def scan(conn: sqlite3.Connection) -> tuple[int, list[ArchivedEvent]]:
            conn.execute("BEGIN")
            try:
                last = int(conn.execute("SELECT coalesce(max(seq), 0) FROM archived").fetchone()[0])
                return last, _candidates(conn, wanted, 0, needle, matches)
            finally:
                conn.execute("COMMIT")

        scanned_up_to, found = await self._read(scan)

        def remove(conn: sqlite3.Connection) -> list[ArchivedEvent]:
            late = _candidates(conn, wanted, scanned_up_to, needle, matches)
            removed: list[ArchivedEvent] = []
            totals: dict[str, list[int]] = {}
            for event in [*found, *late]:
                row = conn.execute(_DELETE_SEQ, (event.seq,)).fetchone()
                if row is None:  # trimmed or erased meanwhile
                    continue
                removed.append(event)
                counts = totals.setdefault(event.uid, [0, 0])
                counts[0] += 1
                counts[1] += int(row[0])
            for uid, (n, size) in totals.items():
                conn.execute(
                    "UPDATE archives SET events = events - ?, bytes = bytes - ? WHERE uid = ?",
                    (n, size, uid),
                )
            return removed

        return await self._write(remove)

    # -- threads -------------------------------------------------------------------------------

    async def _write(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run `work` in one IMMEDIATE transaction on the writer thread."""
        writer, conn = self._writer, self._write_conn
        if writer is None or conn is None:
            raise ArchiveStoreClosed("the archive store is not open")

        def run() -> _T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        try:
            future = asyncio.get_running_loop().run_in_executor(writer, run)
        except RuntimeError:  # shut down between the check and the call
            raise ArchiveStoreClosed("the archive store is closing") from None
        return await future

    async def _read(self, query: Callable[[sqlite3.Connection], _T]) -> _T:
        pool = self._reader
        if pool is None:
            raise ArchiveStoreClosed("the archive store is not open")
        try:
            future = asyncio.get_running_loop().run_in_executor(
                pool, lambda: query(self._reader_conn())
            )
        except RuntimeError:
            raise ArchiveStoreClosed("the archive store is closing") from None
        return await future

    def _reader_conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._reader_local, "conn", None)
        if conn is None:
            conn = _connect(self.path, writer=False)
            self._reader_local.conn = conn
            with self._reader_lock:
                self._reader_conns.append(conn)
        return conn


def _aid(conn: sqlite3.Connection, uid: str) -> int | None:
    row = conn.execute(_AID, (uid,)).fetchone()
    return None if row is None else int(row[0])


def _new_aid(conn: sqlite3.Connection, uid: str) -> int:
    """The archive's id in this file, made on its first event."""
    found = _aid(conn, uid)
    if found is not None:
        return found
    row = conn.execute("INSERT INTO archives (uid) VALUES (?) RETURNING aid", (uid,)).fetchone()
    return int(row[0])


def _delete_chunk(conn: sqlite3.Connection, uid: str, cut_us: int) -> int:
    """Remove up to `DELETE_CHUNK` of the archive's events recorded before `cut_us`."""
    aid = _aid(conn, uid)
    if aid is None:
        return 0
    sizes = conn.execute(_DELETE_OLDER, (aid, cut_us, DELETE_CHUNK)).fetchall()
    if sizes:
        conn.execute(
            "UPDATE archives SET events = events - ?, bytes = bytes - ? WHERE aid = ?",
            (len(sizes), sum(size for (size,) in sizes), aid),
        )
    return len(sizes)


def _candidates(
    conn: sqlite3.Connection,
    uids: Sequence[str],
    after_seq: int,
    needle: bytes,
    matches: ArchiveEraseMatch,
) -> list[ArchivedEvent]:
    """Events of the archives above `after_seq` whose body holds `needle` and that `matches`."""
    out: list[ArchivedEvent] = []
    for uid in uids:
        aid = _aid(conn, uid)
        if aid is None:
            continue
        rows = _Rows(uid)
        query = _LATE_CANDIDATES if after_seq else _CANDIDATES
        for row in conn.execute(query, (aid, after_seq, needle)):
            event = rows.event(row)
            if matches(event):
                out.append(event)
    return out

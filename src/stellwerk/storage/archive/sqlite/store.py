"""The embedded archive store: archived copies and archivers' cursors in an engine's file
(pipeline.db), written in the group commits it shares with the delivery queue.

A row per copy, because erasure removes single events. Tables and why they are shaped so:
docs/storage.md.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Final, TypeVar

from stellwerk.clock import EPOCH, from_us, to_us
from stellwerk.refs import BusRef
from stellwerk.seams import (
    ArchivedEvent,
    ArchiveEraseMatch,
    ArchiveStats,
    ArchiveStoreClosed,
    ArchiveStoreError,
    StoredEvent,
)
from stellwerk.storage.archive.contract import CheckedArchiveStore, check_archive_cursor
from stellwerk.storage.archive.sqlite import schema
from stellwerk.storage.sqlite import Engine, Handle, erasing

DELETE_CHUNK: Final = 10_000
_T = TypeVar("_T")
BeforeDelete = Callable[[sqlite3.Connection, Sequence[int]], None]


def _nothing(conn: sqlite3.Connection, seqs: Sequence[int]) -> None:
    pass


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
    """The `ArchiveStore` on an engine: `SqliteArchiveStore(engine)` beside the delivery queue
    (`stellwerk.storage.pipeline`), or `SqliteArchiveStore(path)` on an engine of its own.

    `before_delete(conn, seqs)` runs in the transaction that deletes copies, before it does:
    the queue beside it gives their bytes to the deliveries that point at them.
    """

    def __init__(
        self,
        where: str | Path | Engine,
        *,
        readers: int = 2,
        before_delete: BeforeDelete | None = None,
    ) -> None:
        self.engine = (
            where if isinstance(where, Engine) else Engine(where, name="pipeline", readers=readers)
        )
        self.path = self.engine.path
        self._before_delete = before_delete or _nothing
        self._handle: Handle | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._handle is not None:
            raise ArchiveStoreError("the archive store was already started")
        handle = self.engine.handle(
            "the archive store", closed=ArchiveStoreClosed, failed=ArchiveStoreError
        )
        await handle.open(schema.create)
        self._handle = handle

    async def close(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            await handle.close()

    async def ping(self) -> None:
        await self._read(lambda conn: conn.execute("SELECT 1").fetchone())
        await self._opened().inside(lambda conn: conn.execute("SELECT 1").fetchone())

    # -- the archiver's side -------------------------------------------------------------------

    async def cursor(self, bus: BusRef) -> int:
        def query(conn: sqlite3.Connection) -> int:
            row = conn.execute(schema.CURSOR, (bus.tenant, bus.bus)).fetchone()
            return int(row[0]) if row else 0

        # Synced: retention trims the log below this, so it must not go back in a power loss.
        return await self._opened().inside(query, synced=True)

    async def _archive(
        self,
        bus: BusRef,
        position: int,
        entries: Sequence[tuple[str, StoredEvent]],
    ) -> None:
        # In position order, so that `seq` follows position within each archive.
        ordered = sorted(entries, key=lambda entry: entry[1].position)

        def work(conn: sqlite3.Connection) -> None:
            row = conn.execute(schema.CURSOR, (bus.tenant, bus.bus)).fetchone()
            current = int(row[0]) if row else 0
            check_archive_cursor(bus, current, position, ordered)
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
            schema.INSERT(conn, rows)
            conn.executemany(
                schema.ADD_TOTALS, [(n, size, aid) for aid, (n, size) in totals.items()]
            )
            conn.execute(schema.SET_CURSOR, (bus.tenant, bus.bus, position))
            handle.grew(sum(len(event.body) for _, event in ordered))

        # Not synced: lost in a power failure together with the cursor, the copies are made
        # again from the log.
        handle = self._opened()
        await handle.write(work, synced=False)

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
            anchor = conn.execute(schema.ANCHOR, (after_seq, aid)).fetchone() if after_seq else None
            if anchor is None:
                found = conn.execute(
                    schema.READ_FROM_START, (aid, start_us, end_us, after_seq, limit)
                )
            else:
                found = conn.execute(
                    schema.READ_AFTER, (aid, anchor[0], after_seq, start_us, end_us, limit)
                )
            return [rows.event(r) for r in found]

        return await self._read(query)

    async def count_window(self, uid: str, start: datetime, end: datetime) -> int:
        start_us, end_us = to_us(start), to_us(end)

        def query(conn: sqlite3.Connection) -> int:
            aid = _aid(conn, uid)
            if aid is None:
                return 0
            return int(conn.execute(schema.COUNT, (aid, start_us, end_us)).fetchone()[0])

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
            # Not synced: what a power failure brings back, the next pass trims again.
            removed = await self._write(
                lambda conn: _delete_chunk(conn, uid, cut_us, self._before_delete), synced=False
            )
            total += removed
            if removed < DELETE_CHUNK:
                return total

    async def drop(self, uid: str) -> int:
        total = 0
        while True:
            removed = await self._write(
                lambda conn: _delete_chunk(conn, uid, 2**63 - 1, self._before_delete),
                synced=False,
            )
            total += removed
            if removed < DELETE_CHUNK:
                break
        # Synced: the archive is gone from the control plane, and its copies with it.
        await self._write(
            lambda conn: conn.execute("DELETE FROM archives WHERE uid = ?", (uid,)), synced=True
        )
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
            self._before_delete(conn, [event.seq for event in [*found, *late]])
            with erasing(conn):
                return _remove_events(conn, [*found, *late])

        # Synced: an erasure that was reported done must not come back.
        return await self._write(remove, synced=True)

    # -- the engine ----------------------------------------------------------------------------

    def _opened(self) -> Handle:
        handle = self._handle
        if handle is None:
            raise ArchiveStoreClosed("the archive store is not open")
        return handle

    async def _write(self, work: Callable[[sqlite3.Connection], _T], *, synced: bool) -> _T:
        return await self._opened().write(work, synced=synced)

    async def _read(self, query: Callable[[sqlite3.Connection], _T]) -> _T:
        return await self._opened().read(query)


def _aid(conn: sqlite3.Connection, uid: str) -> int | None:
    row = conn.execute(schema.AID, (uid,)).fetchone()
    return None if row is None else int(row[0])


def _new_aid(conn: sqlite3.Connection, uid: str) -> int:
    """The archive's id in this file, made on its first event."""
    found = _aid(conn, uid)
    if found is not None:
        return found
    row = conn.execute("INSERT INTO archives (uid) VALUES (?) RETURNING aid", (uid,)).fetchone()
    return int(row[0])


def _delete_chunk(
    conn: sqlite3.Connection, uid: str, cut_us: int, before_delete: BeforeDelete
) -> int:
    """Remove up to `DELETE_CHUNK` of the archive's events recorded before `cut_us`."""
    aid = _aid(conn, uid)
    if aid is None:
        return 0
    seqs = [seq for (seq,) in conn.execute(schema.OLDER, (aid, cut_us, DELETE_CHUNK))]
    if not seqs:
        return 0
    before_delete(conn, seqs)
    with erasing(conn):  # trimmed copies are not left readable in free pages either
        sizes = conn.execute(schema.DELETE_SEQS, (json.dumps(seqs),)).fetchall()
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
        query = schema.LATE_CANDIDATES if after_seq else schema.CANDIDATES
        for row in conn.execute(query, (aid, after_seq, needle)):
            event = rows.event(row)
            if matches(event):
                out.append(event)
    return out


def _remove_events(
    conn: sqlite3.Connection, events: Sequence[ArchivedEvent]
) -> list[ArchivedEvent]:
    """Delete these archived events (those still there) and take them off their totals."""
    removed: list[ArchivedEvent] = []
    totals: dict[str, list[int]] = {}
    for event in events:
        row = conn.execute(schema.DELETE_SEQ, (event.seq,)).fetchone()
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

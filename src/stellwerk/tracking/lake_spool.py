"""The lake's spool: rows a `lake` target has taken, durable before they are acknowledged.

A Parquet file is written whole and cannot be appended to, so rows wait here (a SQLite file
on the delivering process's disk, WAL, one fsync per group of rows) until their file rolls.
Each row goes through three states, which together make the lake a consumer with a cursor:

- *staged* (`file` NULL): acknowledged to the queue, not in any file yet;
- *claimed* (`file` set, `row` kept): promised to that file, which may or may not exist yet;
- *written* (`row` NULL): in the file; the id stays as a tombstone for `TOMBSTONE_SECONDS`.

A re-delivered event (an acknowledgement lost in a crash) finds its id already here and is not
taken twice; a crash between claiming and writing is mended by `claimed()`: the file of a
claim either exists (it was renamed into place whole) or is written again from the same rows.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

# How long a written row's id is kept to recognise a re-delivery of it. A delivery whose
# acknowledgement was lost comes back when its lease runs out after the restart, so a process
# down longer than this may write such an event twice (docs/tracking.md, "The lake").
TOMBSTONE_SECONDS: Final = 86_400.0

T = TypeVar("T")

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS targets (target TEXT PRIMARY KEY, parameters BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS rows (
    seq INTEGER PRIMARY KEY,
    target TEXT NOT NULL,
    partition TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_source TEXT NOT NULL,
    staged_us INTEGER NOT NULL,
    row BLOB,
    file TEXT,
    UNIQUE (target, event_id, event_source)
);
CREATE INDEX IF NOT EXISTS rows_staged ON rows (target, partition, seq) WHERE file IS NULL;
CREATE INDEX IF NOT EXISTS rows_claimed ON rows (file) WHERE file IS NOT NULL AND row IS NOT NULL;
CREATE INDEX IF NOT EXISTS rows_written ON rows (staged_us) WHERE row IS NULL;
"""


@dataclass(frozen=True, slots=True)
class Staged:
    """A row a target hands to the spool: its target, partition, identity and NDJSON line."""

    target: str
    partition: str
    event_id: str
    event_source: str
    row: bytes


@dataclass(frozen=True, slots=True)
class Backlog:
    """What waits in one partition of one target: how many rows, how many bytes, since when."""

    target: str
    partition: str
    rows: int
    bytes: int
    oldest_us: int


@dataclass(frozen=True, slots=True)
class Claim:
    """Rows promised to one file."""

    target: str
    partition: str
    file: str
    rows: list[bytes]


def _now_us() -> int:
    return time.time_ns() // 1000


class Spool:
    """The spool file of one process. Every call runs on its one thread, in order; `stage`
    gathers the rows of concurrent callers into one transaction (one fsync for all of them)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="lake-spool")
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a staged row is acknowledged to the queue, so its commit must reach the disk.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        found = self._db.execute("SELECT value FROM meta WHERE key = 'writer'").fetchone()
        if found is None:
            # Names this spool's files: two processes writing to one lake never clash.
            self.writer = uuid.uuid4().hex[:12]
            self._db.execute("INSERT INTO meta VALUES ('writer', ?)", (self.writer,))
        else:
            self.writer = str(found[0])
        self._waiting: list[tuple[Staged, asyncio.Future[bool]]] = []
        self._staging: asyncio.Task[None] | None = None
        # What waits per (target, partition), kept up to date as rows are staged and claimed:
        # counting it in SQL every tick took 35-90 ms for 100,000 staged rows.
        self._backlog = {(b.target, b.partition): b for b in _backlog(self._db)}
        # Told which partitions rows were staged in (the writer's wake-up): it waits for them,
        # not a clock.
        self._listeners: list[Callable[[set[tuple[str, str]]], None]] = []
        # One more whenever a target's roll settings were kept (`remember`): the writer reads
        # them again only then.
        self.targets_version = 0

    def listen(self, listener: Callable[[set[tuple[str, str]]], None]) -> None:
        """Call `listener` (in the event loop) with the (target, partition) pairs whenever
        new rows were staged in them."""
        self._listeners.append(listener)

    async def _run(self, work: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, work, self._db, *args)

    async def stage(self, row: Staged) -> bool:
        """Take `row` durably; whether it was new (False: its id was staged or written
        before, a re-delivery)."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append((row, future))
        if self._staging is None:
            self._staging = asyncio.create_task(self._stage_waiting())
        return await future

    async def _stage_waiting(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    fresh = await self._run(_stage, [row for row, _ in batch])
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                else:
                    now = _now_us()
                    grown: set[tuple[str, str]] = set()
                    for (row, future), new in zip(batch, fresh, strict=True):
                        if new:
                            self._count(row.target, row.partition, 1, len(row.row), now)
                            grown.add((row.target, row.partition))
                        if not future.done():
                            future.set_result(new)
                    if grown:
                        for listener in self._listeners:
                            listener(grown)
        finally:
            self._staging = None

    async def remember(self, target: str, parameters: bytes) -> None:
        """Keep a target's roll settings, for rows of it left staged by an earlier run."""
        await self._run(_remember, target, parameters)
        self.targets_version += 1

    async def parameters(self) -> dict[str, bytes]:
        return await self._run(_parameters)

    def _count(self, target: str, partition: str, rows: int, size: int, oldest_us: int) -> None:
        key = (target, partition)
        known = self._backlog.get(key)
        if known is not None:
            rows += known.rows
            size += known.bytes
            oldest_us = min(oldest_us, known.oldest_us)
        self._backlog[key] = Backlog(target, partition, rows, size, oldest_us)

    def waiting(self, target: str, partition: str) -> Backlog | None:
        return self._backlog.get((target, partition))

    def backlog(self) -> list[Backlog]:
        """What waits to be written, per target and partition."""
        return list(self._backlog.values())

    async def claim(self, target: str, partition: str, max_rows: int, max_bytes: int) -> Claim:
        """Promise the oldest staged rows of a partition (at most `max_rows`, and stopping once
        `max_bytes` are reached) to a new file."""
        claim, next_oldest_us = await self._run(
            _claim, target, partition, max_rows, max_bytes, self.writer
        )
        key = (target, partition)
        known = self._backlog.get(key)
        if known is not None:
            rows = known.rows - len(claim.rows)
            if rows <= 0 or next_oldest_us is None:
                del self._backlog[key]
            else:
                size = known.bytes - sum(len(r) for r in claim.rows)
                self._backlog[key] = Backlog(target, partition, rows, size, next_oldest_us)
        return claim

    async def claimed(self) -> list[Claim]:
        """Claims whose files may not have been written (a crash in between)."""
        return await self._run(_claimed)

    async def written(self, file: str) -> None:
        """The claim's file is in place: its rows become tombstones."""
        await self._run(_written, file)

    async def prune(self, older_than_s: float = TOMBSTONE_SECONDS) -> int:
        return await self._run(_prune, _now_us() - int(older_than_s * 1e6))

    async def oldest_tombstone(self) -> float | None:
        """When the oldest tombstone was written (epoch seconds); None: there is none."""
        found = await self._run(_oldest_tombstone)
        return None if found is None else found / 1e6

    async def close(self) -> None:
        if self._staging is not None:
            await self._staging
        await self._run(_close)
        self._thread.shutdown(wait=True)


def _stage(db: sqlite3.Connection, rows: Sequence[Staged]) -> list[bool]:
    now = _now_us()
    fresh = []
    db.execute("BEGIN IMMEDIATE")
    try:
        for r in rows:
            cursor = db.execute(
                "INSERT OR IGNORE INTO rows (target, partition, event_id, event_source,"
                " staged_us, row) VALUES (?, ?, ?, ?, ?, ?)",
                (r.target, r.partition, r.event_id, r.event_source, now, r.row),
            )
            fresh.append(cursor.rowcount == 1)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return fresh


def _remember(db: sqlite3.Connection, target: str, parameters: bytes) -> None:
    db.execute(
        "INSERT INTO targets VALUES (?, ?) ON CONFLICT (target) DO UPDATE"
        " SET parameters = excluded.parameters",
        (target, parameters),
    )


def _parameters(db: sqlite3.Connection) -> dict[str, bytes]:
    return {t: bytes(p) for t, p in db.execute("SELECT target, parameters FROM targets")}


def _backlog(db: sqlite3.Connection) -> list[Backlog]:
    found = db.execute(
        "SELECT target, partition, count(*), sum(length(row)), min(staged_us) FROM rows"
        " WHERE file IS NULL GROUP BY target, partition"
    )
    return [Backlog(t, p, n, b, o) for t, p, n, b, o in found]


def _claim(
    db: sqlite3.Connection, target: str, partition: str, max_rows: int, max_bytes: int, writer: str
) -> tuple[Claim, int | None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        found = db.execute(
            "SELECT seq, row FROM rows WHERE target = ? AND partition = ? AND file IS NULL"
            " ORDER BY seq LIMIT ?",
            (target, partition, max_rows),
        )
        seqs: list[int] = []
        rows: list[bytes] = []
        size = 0
        for seq, row in found:
            seqs.append(seq)
            rows.append(bytes(row))
            size += len(row)
            if size >= max_bytes:
                break
        file = f"part-{writer}-{seqs[0]:012d}.parquet" if seqs else ""
        if seqs:
            db.execute(
                "UPDATE rows SET file = ? WHERE target = ? AND partition = ? AND file IS NULL"
                " AND seq BETWEEN ? AND ?",
                (file, target, partition, seqs[0], seqs[-1]),
            )
        # Rows are staged in the order of seq, so the next one left is the oldest.
        left = db.execute(
            "SELECT staged_us FROM rows WHERE target = ? AND partition = ? AND file IS NULL"
            " ORDER BY seq LIMIT 1",
            (target, partition),
        ).fetchone()
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return Claim(target, partition, file, rows), None if left is None else int(left[0])


def _claimed(db: sqlite3.Connection) -> list[Claim]:
    claims: dict[str, Claim] = {}
    found = db.execute(
        "SELECT target, partition, file, row FROM rows"
        " WHERE file IS NOT NULL AND row IS NOT NULL ORDER BY seq"
    )
    for target, partition, file, row in found:
        claim = claims.get(file)
        if claim is None:
            claim = claims[file] = Claim(target, partition, file, [])
        claim.rows.append(bytes(row))
    return list(claims.values())


def _written(db: sqlite3.Connection, file: str) -> None:
    # staged_us becomes the time of writing: tombstones are pruned from then on.
    db.execute(
        "UPDATE rows SET row = NULL, staged_us = ? WHERE file = ? AND row IS NOT NULL",
        (_now_us(), file),
    )


def _prune(db: sqlite3.Connection, before_us: int) -> int:
    cursor = db.execute("DELETE FROM rows WHERE row IS NULL AND staged_us < ?", (before_us,))
    return cursor.rowcount


def _oldest_tombstone(db: sqlite3.Connection) -> int | None:
    found = db.execute("SELECT min(staged_us) FROM rows WHERE row IS NULL").fetchone()
    return None if found is None or found[0] is None else int(found[0])


def _close(db: sqlite3.Connection) -> None:
    db.close()

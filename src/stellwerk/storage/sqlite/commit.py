"""The writer thread's side of the embedded event log: each group of appends in one transaction.

Everything here runs in the single writer thread and owns that thread's state: the connection,
the cache of stream ids, the next position and the last recorded time. Positions are assigned
here in commit order; recorded time is read once per group and never goes back, so that
positions and recorded times sort alike (the `marks` table relies on it).
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import msgspec

from stellwerk.events.rfc3339 import format_rfc3339
from stellwerk.storage.eventlog import AppendResult, AppendStatus, LogClosed, NewEvent
from stellwerk.storage.sqlite import schema
from stellwerk.storage.sqlite.writer import Job, PendingAppend

TRIM_CHUNK: Final = 20_000
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_encode_json: Final = msgspec.json.Encoder().encode


def to_us(moment: datetime) -> int:
    """Microseconds since the epoch: the log's unit of recorded time."""
    return (moment - _EPOCH) // timedelta(microseconds=1)


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


class GroupCommitter:
    """Stores groups of appends, trim chunks and dedup sweeps on the writer's connection."""

    def __init__(
        self,
        *,
        dedup_window: timedelta,
        clock: Callable[[], datetime],
        on_commit: Callable[[int, float], None] | None,
        sweep_interval: float,
        max_wal_bytes: int,
    ) -> None:
        self._dedup_window_us = dedup_window // timedelta(microseconds=1)
        self._clock = clock
        self._on_commit = on_commit
        self._sweep_interval = sweep_interval
        self._last_sweep = -float("inf")
        self._max_wal_bytes = max_wal_bytes
        self._wal_path: Path | None = None
        self._conn: sqlite3.Connection | None = None
        self._streams: dict[tuple[str, str], int] = {}
        self._next_position = 1
        self._last_recorded_us = 0

    @property
    def next_position(self) -> int:
        return self._next_position

    def open(self, path: Path) -> None:
        """Open the file (creating the schema) and load where the log left off."""
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = schema.connect(path, role=schema.Role.WRITER)
        for stream, tenant, bus, last_position in conn.execute(schema.SELECT_STREAMS):
            self._streams[(tenant, bus)] = stream
            self._next_position = max(self._next_position, last_position + 1)
        row = conn.execute(schema.LAST_MARK).fetchone()
        self._last_recorded_us = row[0] if row else 0
        self._wal_path = path.with_name(path.name + "-wal")
        self._conn = conn

    def close(self) -> None:
        """Close the file, folding the WAL into it first so a stopped log is one compact file."""
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()
            self._conn = None

    def run_job(self, job: Job) -> Any:
        conn = self._writer_conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = job.work(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return result

    def commit_group(self, group: Sequence[PendingAppend]) -> list[list[AppendResult]]:
        """Store a group of appends in one transaction; return each one's results."""
        conn = self._writer_conn()
        started = time.perf_counter()
        now_us = max(to_us(self._clock()), self._last_recorded_us)
        recorded = format_rfc3339(from_us(now_us)).encode()
        events = [event for pending in group for event in pending.batch]
        new_streams: list[tuple[str, str]] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            streams = [self._stream_id(conn, e.tenant, e.bus, new_streams) for e in events]
            duplicates = self._live_duplicates(conn, events, streams, now_us)
            results, event_rows, dedup_rows, last = self._plan(
                events, streams, duplicates, now_us, recorded
            )
            if event_rows:
                conn.executemany(schema.INSERT_EVENT, event_rows)
                conn.execute(schema.INSERT_MARK, (event_rows[0][0], now_us))
                if dedup_rows:
                    conn.executemany(schema.UPSERT_DEDUP, dedup_rows)
                conn.executemany(schema.UPDATE_STREAM, [(p, s) for s, p in last.items()])
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for key in new_streams:
                del self._streams[key]
            raise
        if event_rows:
            self._next_position = event_rows[-1][0] + 1
            self._last_recorded_us = now_us
        if self._on_commit is not None:
            # The group is durable whatever the observer does; its failure must not fail it.
            with contextlib.suppress(Exception):
                self._on_commit(len(events), time.perf_counter() - started)
        split: list[list[AppendResult]] = []
        offset = 0
        for pending in group:
            split.append(results[offset : offset + len(pending.batch)])
            offset += len(pending.batch)
        return split

    def _stream_id(
        self, conn: sqlite3.Connection, tenant: str, bus: str, created: list[tuple[str, str]]
    ) -> int:
        key = (tenant, bus)
        stream = self._streams.get(key)
        if stream is None:
            cursor = conn.execute(schema.INSERT_STREAM, key)
            stream = self._streams[key] = int(cursor.lastrowid or 0)
            created.append(key)
        return stream

    def _live_duplicates(
        self, conn: sqlite3.Connection, events: list[NewEvent], streams: list[int], now_us: int
    ) -> dict[int, int]:
        """Index in `events` to the position of an earlier event with the same key, if live."""
        if self._dedup_window_us <= 0:
            return {}
        keys = _encode_json([[s, e.source, e.id] for s, e in zip(streams, events, strict=True)])
        cutoff = now_us - self._dedup_window_us
        rows = conn.execute(schema.FIND_DUPLICATES, (keys.decode(), cutoff)).fetchall()
        return {int(index): position for index, position in rows}

    def _plan(
        self,
        events: list[NewEvent],
        streams: list[int],
        duplicates: dict[int, int],
        now_us: int,
        recorded: bytes,
    ) -> tuple[list[AppendResult], list[tuple[Any, ...]], list[tuple[Any, ...]], dict[int, int]]:
        dedup = self._dedup_window_us > 0
        seen: dict[tuple[int, str, str], int] = {}
        suffixes: dict[int, bytes] = {}
        results: list[AppendResult] = []
        event_rows: list[tuple[Any, ...]] = []
        dedup_rows: list[tuple[Any, ...]] = []
        last: dict[int, int] = {}
        position = self._next_position
        for index, (event, stream) in enumerate(zip(events, streams, strict=True)):
            key = (stream, event.source, event.id)
            earlier = duplicates.get(index) or seen.get(key)
            if earlier is not None:
                results.append(AppendResult(AppendStatus.DUPLICATE, earlier))
                continue
            suffix = suffixes.get(stream)
            if suffix is None:
                suffix = suffixes[stream] = _owned_suffix(event.tenant, event.bus, recorded)
            body = event.body[:-1] + suffix
            event_rows.append(
                (position, stream, now_us, event.id, event.source, event.type, event.subject, body)
            )
            if dedup:
                seen[key] = position
                dedup_rows.append((position, stream, event.source, event.id, now_us))
            last[stream] = position
            results.append(AppendResult(AppendStatus.STORED, position))
            position += 1
        return results, event_rows, dedup_rows, last

    def housekeeping(self) -> None:
        """Between groups: expire dedup entries and keep the WAL within its bound."""
        # Each step that fails now (a full disk, say) is tried again after the next group.
        with contextlib.suppress(sqlite3.Error):
            self.sweep_dedup()
        with contextlib.suppress(sqlite3.Error, OSError):
            self.bound_wal()

    def bound_wal(self) -> None:
        """Checkpoint here, in the writer, when the background checkpoints cannot keep up.

        Between groups nothing appends, so this checkpoint can fold in the whole WAL and the
        next transaction starts it over (see checkpoint.py).
        """
        if self._wal_path is None or self._wal_path.stat().st_size <= self._max_wal_bytes:
            return
        self._writer_conn().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    def sweep_dedup(self) -> None:
        """Drop expired dedup entries, a chunk at a time, at most once per sweep interval."""
        if self._dedup_window_us <= 0 or time.monotonic() - self._last_sweep < self._sweep_interval:
            return
        self._last_sweep = time.monotonic()
        conn = self._writer_conn()
        cutoff = max(to_us(self._clock()), self._last_recorded_us) - self._dedup_window_us
        first_live = first_position_since(conn, cutoff + 1) or self._next_position
        lowest = conn.execute(schema.MIN_DEDUP_POSITION).fetchone()[0]
        if lowest is None or lowest >= first_live:
            return
        conn.execute(schema.DELETE_DEDUP_BELOW, (min(first_live, lowest + TRIM_CHUNK),))

    def trim_chunk(self, conn: sqlite3.Connection, cut_us: int) -> int:
        cut = first_position_since(conn, cut_us) or self._next_position
        lowest = conn.execute(schema.MIN_EVENT_POSITION).fetchone()[0]
        if lowest is None or lowest >= cut:
            return 0
        bound = min(cut, lowest + TRIM_CHUNK)
        removed = conn.execute(schema.DELETE_EVENTS_BELOW, (bound,)).rowcount
        # Marks still inside the dedup window stay: the dedup sweep tells live entries by them,
        # even when retention is shorter than the window.
        marks_bound = bound
        if self._dedup_window_us > 0:
            live_cutoff = self._last_recorded_us - self._dedup_window_us + 1
            first_live = first_position_since(conn, live_cutoff) or self._next_position
            marks_bound = min(bound, first_live)
        conn.execute(schema.DELETE_MARKS_BELOW, (marks_bound,))
        return removed

    def _writer_conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise LogClosed("the event log is not open")
        return self._conn


def first_position_since(conn: sqlite3.Connection, moment_us: int) -> int | None:
    row = conn.execute(schema.FIRST_POSITION_SINCE, (moment_us,)).fetchone()
    return int(row[0]) if row else None


def _owned_suffix(tenant: str, bus: str, recorded: bytes) -> bytes:
    """The end of a stored body: Stellwerk's extensions, last so that they win over any copies."""
    return (
        b',"tenant":'
        + _encode_json(tenant)
        + b',"bus":'
        + _encode_json(bus)
        + b',"recordedtime":"'
        + recorded
        + b'"}'
    )

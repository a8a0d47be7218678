"""The writer thread's side of the embedded event log: each group of appends in one transaction.

Everything here runs in the single writer thread and owns that thread's state: the connection,
the cache of stream ids, the next position and the last recorded time. Positions are assigned
here in commit order, bus by bus within a group so that each bus's events form one dense segment
(see `schema.py`); recorded time is read once per group and never goes back, so that positions
and recorded times sort alike (the `marks` table relies on it).
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

import msgspec

from stellwerk.clock import from_us, to_us
from stellwerk.events import format_rfc3339
from stellwerk.seams import AppendResult, LogClosed
from stellwerk.storage.eventlog.sqlite import schema
from stellwerk.storage.eventlog.sqlite.dedup import FLUSH_ENTRIES, MIN_SLICE, RecentKeys
from stellwerk.storage.eventlog.sqlite.segments import GroupPlan, decode_meta, migrate_legacy
from stellwerk.storage.eventlog.sqlite.writer import Job, PendingAppend
from stellwerk.storage.sqlite import WalBound

TRIM_CHUNK: Final = 20_000
_encode_json: Final = msgspec.json.Encoder().encode


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
        dedup_flush_entries: int = FLUSH_ENTRIES,
    ) -> None:
        self._dedup_window_us = dedup_window // timedelta(microseconds=1)
        self._clock = clock
        self._on_commit = on_commit
        self._sweep_interval = sweep_interval
        self._last_sweep = -float("inf")
        self._max_wal_bytes = max_wal_bytes
        self._wal_bound: WalBound | None = None
        self._conn: sqlite3.Connection | None = None
        self._streams: dict[tuple[str, str], int] = {}
        self._next_position = 1
        self._last_recorded_us = 0
        self._spilled = 0
        self._recent = RecentKeys(flush_entries=dedup_flush_entries)
        # The first live position and its mark's recorded time, from the last look at `marks`
        # (see `_first_live_at`); None: look again.
        self._live_mark: tuple[int, int] | None = None

    @property
    def next_position(self) -> int:
        return self._next_position

    def open(self, path: Path) -> None:
        """Open the file (creating the schema) and load where the log left off."""
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = schema.connect(path, role=schema.Role.WRITER)
        migrate_legacy(conn)
        for stream, tenant, bus, last_position in conn.execute(schema.SELECT_STREAMS):
            self._streams[(tenant, bus)] = stream
            self._next_position = max(self._next_position, last_position + 1)
        row = conn.execute(schema.LAST_MARK).fetchone()
        self._last_recorded_us = row[0] if row else 0
        self._spilled = conn.execute(schema.COUNT_SPILLED).fetchone()[0]
        if self._dedup_window_us > 0:
            # Entries not yet flushed are rebuilt from their events; expired ones are not needed.
            state = conn.execute(schema.DEDUP_STATE).fetchone()
            since = max(state[0] if state else 1, self._first_live(conn))
            rebuild = [
                (position + i, stream, source, event_id)
                for position, stream, meta in conn.execute(schema.SEGMENT_KEYS_SINCE, (since,))
                for i, (event_id, source, _type, _subject) in enumerate(decode_meta(meta))
                if position + i >= since
            ]
            self._recent.load(conn, rebuild)
        self._wal_bound = WalBound(path, max_bytes=self._max_wal_bytes)
        self._conn = conn

    def close(self) -> None:
        """Close the file, folding the WAL into it first so a stopped log is one compact file."""
        if self._conn is not None:
            if self._dedup_window_us > 0:
                # If this fails, the next start rebuilds the entries from the events instead.
                with contextlib.suppress(sqlite3.Error):
                    first_live = self._first_live(self._conn)
                    self._recent.flush_all(self._conn, self._next_position, first_live)
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
        new_streams: list[tuple[str, str]] = []
        spilled = 0
        flushed: list[tuple[int, int, int]] = []
        flush_done = False
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Concurrent appends have no order among them: taking them bus by bus makes each
            # bus's events of the group one run, so one segment row.
            order = sorted(
                range(len(group)),
                key=lambda i: self._stream_id(
                    conn, group[i].batch[0].tenant, group[i].batch[0].bus, new_streams
                ),
            )
            events = [event for i in order for event in group[i].batch]
            streams = [self._stream_id(conn, e.tenant, e.bus, new_streams) for e in events]
            plan = GroupPlan(events, streams, self._next_position, recorded)
            if self._dedup_window_us > 0:
                first_live = self._first_live_at(conn, now_us - self._dedup_window_us + 1)
                self._find_duplicates(conn, plan, first_live)
            plan.assign()
            if plan.segments:
                conn.executemany(schema.INSERT_SEGMENT, plan.segment_rows(now_us))
                conn.execute(schema.INSERT_MARK, (self._next_position, now_us))
                if plan.spill_rows:
                    conn.executemany(schema.UPSERT_SPILLED, plan.spill_rows)
                    spilled = len(plan.spill_rows)
                conn.executemany(schema.UPDATE_STREAM, [(p, s) for s, p in plan.last.items()])
                if self._dedup_window_us > 0:
                    flushed, flush_done = self._recent.next_slice(
                        max(MIN_SLICE, len(plan.hash_rows)), self._next_position, first_live
                    )
                    if flushed:
                        conn.execute(schema.UPSERT_HASHES, (_encode_json(flushed),))
                    if flush_done:
                        conn.execute(schema.SET_DEDUP_STATE, (self._recent.flush_upto,))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for key in new_streams:
                del self._streams[key]
            raise
        if plan.segments:
            if self._live_mark is None and self._dedup_window_us > 0:
                # No mark was live: this group's is the first, until the window passes it.
                self._live_mark = (self._next_position, now_us)
            self._next_position = plan.next_position
            self._last_recorded_us = now_us
            if self._wal_bound is not None:
                self._wal_bound.grew(sum(len(event.body) for event in events))
            if self._dedup_window_us > 0:
                self._recent.add(plan.hash_rows)
                self._recent.written(len(flushed), flush_done)
        self._spilled += spilled
        if self._on_commit is not None:
            # The group is durable whatever the observer does; its failure must not fail it.
            with contextlib.suppress(Exception):
                self._on_commit(len(events), time.perf_counter() - started)
        split: list[list[AppendResult]] = [[] for _ in group]
        offset = 0
        for i in order:
            count = len(group[i].batch)
            split[i] = plan.results[offset : offset + count]
            offset += count
        return split

    def _first_live_at(self, conn: sqlite3.Connection, cutoff_us: int) -> int:
        """The first position recorded at or after `cutoff_us` (the next one if none is).

        Asked for every group, but its answer changes only when the window moves past the mark
        found: the cutoff never decreases (recorded time never goes back) and marks come in
        recorded-time order, so while the cutoff stays at or below that mark's time no other
        mark can come first. Remembering it spares each commit a query, and with it a release
        and re-take of the GIL that waits for the busy event loop (up to the switch interval).
        Trims keep every live mark; an erasure never touches marks.
        """
        remembered = self._live_mark
        if remembered is not None and cutoff_us <= remembered[1]:
            return remembered[0]
        row = conn.execute(schema.FIRST_LIVE_MARK, (cutoff_us,)).fetchone()
        if row is None:
            self._live_mark = None  # set by the next commit, whose mark is then the first live one
            return self._next_position
        self._live_mark = (int(row[0]), int(row[1]))
        return self._live_mark[0]

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

    def _find_duplicates(self, conn: sqlite3.Connection, plan: GroupPlan, first_live: int) -> None:
        """Mark the group's events that repeat a live one, and keys whose hash is taken."""
        recent = self._recent
        on_disk: list[int] = []
        for index, hashed in enumerate(plan.hashes):
            entry = recent.lookup(hashed)
            if entry is None or entry[0] < first_live:
                on_disk.append(index)
            elif entry[1] == plan.tags[index]:
                plan.earlier[index] = entry[0]
            else:  # another key with the same hash: this one's entry goes to the spill table
                plan.hash_taken.add(hashed)
        if on_disk:
            asked = _encode_json([plan.hashes[i] for i in on_disk])
            for at, position, tag in conn.execute(schema.FIND_HASHES, (asked, first_live)):
                index = on_disk[at]
                if tag == plan.tags[index]:
                    plan.earlier[index] = position
                else:
                    plan.hash_taken.add(plan.hashes[index])
        if self._spilled:
            triples = _encode_json([list(key) for key in plan.keys])
            for index, position in conn.execute(schema.FIND_SPILLED, (triples, first_live)):
                plan.earlier[index] = position

    def housekeeping(self) -> None:
        """Between groups: expire dedup entries and keep the WAL within its bound."""
        # Each step that fails now (a full disk, say) is tried again after the next group.
        with contextlib.suppress(sqlite3.Error):
            self.sweep_dedup()
        self.bound_wal()

    def bound_wal(self) -> None:
        """Checkpoint here, in the writer, when the background checkpoints cannot keep up.

        Between groups nothing appends, so this checkpoint can fold in the whole WAL and the
        next transaction starts it over (see storage/sqlite/checkpoint.py).
        """
        if self._wal_bound is not None:
            self._wal_bound.after_group(self._writer_conn())

    def sweep_dedup(self) -> None:
        """Drop expired dedup entries, a chunk at a time, at most once per sweep interval."""
        if self._dedup_window_us <= 0 or time.monotonic() - self._last_sweep < self._sweep_interval:
            return
        self._last_sweep = time.monotonic()
        conn = self._writer_conn()
        first_live = self._first_live(conn)
        if self._spilled:
            conn.execute(schema.DELETE_SPILLED_BELOW, (first_live,))
            self._spilled = conn.execute(schema.COUNT_SPILLED).fetchone()[0]
        lowest = conn.execute(schema.MIN_DEDUP_POSITION).fetchone()[0]
        if lowest is None or lowest >= first_live:
            return
        conn.execute(schema.DELETE_DEDUP_BELOW, (min(first_live, lowest + TRIM_CHUNK),))

    def trim_chunk(
        self, conn: sqlite3.Connection, cut_us: int, keep: dict[tuple[str, str], int], start: int
    ) -> tuple[int, int]:
        """Remove the segments recorded before `cut_us` in positions `[start, start + chunk)`.

        A bus in `keep` keeps its events above the position given there, however old (they are
        not routed or archived yet). Returns how many events went and where the next chunk
        starts, or 0 there when the trim is done.
        """
        cut = first_position_since(conn, cut_us) or self._next_position
        lowest = conn.execute(schema.MIN_SEGMENT_POSITION).fetchone()[0]
        if lowest is None:
            return 0, 0
        start = max(start, lowest)
        if start >= cut:
            return 0, 0
        bound = min(cut, start + TRIM_CHUNK)
        self._recent.write_below(conn, bound)
        kept = {
            str(stream): keep[key] + 1
            for key, stream in self._known_streams(conn).items()
            if key in keep
        }
        removed = sum(
            int(n)
            for (n,) in conn.execute(
                schema.DELETE_SEGMENTS_IN, (start, bound, _encode_json(kept).decode())
            )
        )
        # Marks still inside the dedup window stay: the dedup sweep tells live entries by them,
        # even when retention is shorter than the window. So do the marks of kept segments: a
        # time window is turned into positions by them.
        marks_bound = bound
        if self._dedup_window_us > 0:
            live_cutoff = self._last_recorded_us - self._dedup_window_us + 1
            first_live = first_position_since(conn, live_cutoff) or self._next_position
            marks_bound = min(bound, first_live)
        left = conn.execute(schema.MIN_SEGMENT_POSITION).fetchone()[0]
        if left is not None:
            marks_bound = min(marks_bound, left)
        conn.execute(schema.DELETE_MARKS_BELOW, (marks_bound,))
        return removed, (bound if bound < cut else 0)

    def _known_streams(self, conn: sqlite3.Connection) -> dict[tuple[str, str], int]:
        return {
            (tenant, bus): stream for stream, tenant, bus, _ in conn.execute(schema.SELECT_STREAMS)
        }

    def persist_dedup_below(self, conn: sqlite3.Connection, position: int) -> None:
        """In an erasure's transaction: the dedup entries of events about to lose their keys go
        to the table now, since a restart could no longer rebuild them from those events."""
        self._recent.write_below(conn, position)

    def _first_live(self, conn: sqlite3.Connection) -> int:
        """The first position whose dedup entry has not expired (the next one if none)."""
        cutoff = max(to_us(self._clock()), self._last_recorded_us) - self._dedup_window_us
        return first_position_since(conn, cutoff + 1) or self._next_position

    def _writer_conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise LogClosed("the event log is not open")
        return self._conn


def first_position_since(conn: sqlite3.Connection, moment_us: int) -> int | None:
    row = conn.execute(schema.FIRST_POSITION_SINCE, (moment_us,)).fetchone()
    return int(row[0]) if row else None

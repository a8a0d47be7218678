"""The writing side of the embedded log: groups of appends to the files, the index behind them.

Two threads. The writer thread (`GroupCommitter.commit_group`, run by `writer.LogWriter`) owns
the next position, the streams, the last recorded time and the newest dedup entries: it stores
a group with one `writev` and one `fdatasync`, and its callers are answered then. The indexer
thread (`Indexer`) brings the index up to date with the groups stored since its last commit,
every `index_interval` seconds or once `INDEX_CHUNKS` chunks wait, and writes the dedup runs and
deletes expired ones. So the index costs a few pages per interval instead of a few pages per
group (at a few thousand small groups a second, a commit every 50 ms wrote half as many bytes
again as the events), and nothing it does ever stands between an append and its
acknowledgement. Readers take what it lacks from the files (`reads.Tail`).

Positions are assigned in commit order, bus by bus within a group, so that each bus's events of
a group form one chunk; recorded time is read once per group and never goes back, so positions
and recorded times sort alike (the `marks` table relies on it).
"""

from __future__ import annotations

import contextlib
import itertools
import operator
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

import msgspec
import structlog

from stellwerk.clock import from_us, to_us
from stellwerk.events.rfc3339 import format_rfc3339
from stellwerk.refs import TenantName
from stellwerk.seams import AppendResult, AppendStatus, LogClosed, LogUnavailable, NewEvent
from stellwerk.storage.eventlog.sqlite import chunks, index
from stellwerk.storage.eventlog.sqlite.dedup import Dedup, key_digests
from stellwerk.storage.eventlog.sqlite.head import HEAD_FILE, Head
from stellwerk.storage.eventlog.sqlite.logfiles import LogFiles
from stellwerk.storage.eventlog.sqlite.upkeep import rebuild_entries, redo_erasures
from stellwerk.storage.eventlog.sqlite.writer import PendingAppend, announce_planned
from stellwerk.storage.sqlite import DiskTrouble, WalBound, diagnose, probe

INDEX_INTERVAL: Final = 0.5
# Chunks that make the indexer commit before its interval is up: a bound on the tail that
# readers take from the files, and on the index's lag under load.
INDEX_CHUNKS: Final = 256
MAX_INDEX_RETRY: Final = 1.0  # the longest wait before an index commit that failed is tried again
MAX_CHUNK_EVENTS: Final = 4096
_encode_json: Final = msgspec.json.Encoder().encode
log = structlog.stdlib.get_logger(__name__)

ChunkRow = tuple[int, int, int, int, int, int, int]  # position, stream, count, recorded, place


@dataclass
class Unindexed:
    """What the index lacks: chunks, marks and streams of the groups stored since its commit."""

    chunks: list[ChunkRow] = field(default_factory=list)
    marks: list[tuple[int, int]] = field(default_factory=list)
    last: dict[int, int] = field(default_factory=dict)  # stream -> newest position
    streams: list[tuple[int, TenantName, str]] = field(default_factory=list)
    end: tuple[int, int] = (1, 0)  # the files' end after these chunks

    def __bool__(self) -> bool:
        return bool(self.chunks or self.streams)

    def take(self, other: Unindexed) -> None:
        self.chunks += other.chunks
        self.marks += other.marks
        for stream, position in other.last.items():
            self.last[stream] = max(self.last.get(stream, 0), position)
        self.streams += other.streams
        self.end = other.end


class GroupCommitter:
    """Stores groups of appends in the files; hands what the index lacks to the indexer."""

    def __init__(
        self,
        directory: Path,
        *,
        dedup_window: timedelta,
        clock: Callable[[], datetime],
        on_commit: Callable[[int, float], None] | None,
        index_interval: float = INDEX_INTERVAL,
        max_wal_bytes: int,
        max_file_bytes: int,
        dedup: Dedup,
    ) -> None:
        self.directory = directory
        self.window_us = dedup_window // timedelta(microseconds=1)
        self.clock = clock
        self._on_commit = on_commit
        self.files = LogFiles(directory, max_file_bytes=max_file_bytes)
        self.dedup = dedup
        self.head: Head | None = None
        self.indexer = Indexer(self, index_interval=index_interval, max_wal_bytes=max_wal_bytes)
        self._conn: sqlite3.Connection | None = None  # the writer thread's reads
        self._streams: dict[tuple[TenantName, str], int] = {}
        self._next_stream = 1
        self.next_position = 1
        self.last_recorded_us = 0
        self._recorded_second = -1  # the second whose text is `_recorded_prefix`
        self._recorded_prefix = b""
        # The first live position and its mark's recorded time (see `_first_live_at`).
        self._live_mark: tuple[int, int] | None = None
        # Why the last group could not be stored; None once one is (or a probe writes again).
        self.trouble: DiskTrouble | None = None

    # -- open and close ------------------------------------------------------------------------

    def open(self) -> None:
        """Open the index and the files, index what the files hold beyond the index, load the
        dedup entries; then take appends after the last intact chunk."""
        conn = self.indexer.open(self.directory / index.INDEX_FILE)
        for stream, tenant, bus, last_position in conn.execute(index.SELECT_STREAMS):
            self._streams[(tenant, bus)] = stream
            self._next_stream = max(self._next_stream, stream + 1)
            self.next_position = max(self.next_position, last_position + 1)
        mark = conn.execute(index.LAST_MARK).fetchone()
        self.last_recorded_us = mark[1] if mark else 0
        end = self._recover(conn)
        redo_erasures(conn, self.files)
        self._conn = index.connect(self.directory / index.INDEX_FILE, role=index.Role.READER)
        if self.window_us > 0:
            flushed_below = index.get_state(conn, "flushed_below", 1)
            self.dedup.load(conn, flushed_below)
            # Entries of events older than the window are not needed (a moved log says 1).
            since = max(flushed_below, self.first_live(conn))
            self.dedup.add(rebuild_entries(conn, self.files, since), self.next_position)
        self.files.open_for_append(*end)
        self.head = Head(self.directory / HEAD_FILE, create=True)
        self.head.store(*end)
        self.indexer.start()

    def _recover(self, conn: sqlite3.Connection) -> tuple[int, int]:
        """Index the intact chunks beyond the high-water mark, cut off a torn tail; return
        where appends go on."""
        file = index.get_state(conn, "indexed_file", 1)
        offset = index.get_state(conn, "indexed_end", 0)
        numbers = self.files.numbers()
        found = Unindexed(end=(file, offset))
        if numbers:
            # Chunks in files that are gone were trimmed (a backup can copy the index before
            # a trim and the files after it).
            conn.execute("DELETE FROM chunks WHERE file < ?", (numbers[0],))
            if file < numbers[0]:
                file, offset = numbers[0], 0
            while True:
                last_good = offset
                for at, head, raw in self.files.scan(file, offset):
                    tenant, bus = chunks.owner(raw)
                    stream = self._stream_id(tenant, bus, found.streams)
                    last = head.position + head.events - 1
                    found.chunks.append(
                        (head.position, stream, head.events, head.recorded_us, file, at, head.size)
                    )
                    found.marks.append((head.position, head.recorded_us))
                    found.last[stream] = max(found.last.get(stream, 0), last)
                    self.next_position = max(self.next_position, last + 1)
                    self.last_recorded_us = max(self.last_recorded_us, head.recorded_us)
                    last_good = at + head.size
                later = [n for n in numbers if n > file]
                if not later:
                    found.end = (file, last_good)
                    break
                # A later file exists: this one was closed whole, so anything unreadable at its
                # end is garbage; appends went on in the next file.
                file, offset = later[0], 0
        self.indexer.pending.take(found)
        self.indexer.commit()
        return found.end

    def close(self) -> None:
        """Index what is left and store every dedup entry, so the next start has nothing to
        redo; then fold the WAL into the index file."""
        self.indexer.stop()
        if self._conn is not None:
            if self.window_us > 0:
                with contextlib.suppress(sqlite3.Error, OSError):
                    self.indexer.persist_dedup()
            self._conn.close()
            self._conn = None
        self.indexer.close()
        self.files.close()
        if self.head is not None:
            self.head.close()

    # -- groups (the writer thread) ------------------------------------------------------------

    def commit_group(self, group: Sequence[PendingAppend]) -> list[list[AppendResult]]:
        """Store a group of appends with one write and one fsync; return each one's results.

        A group that the disk refuses (full, read-only, failing) is cut off the files again and
        every caller gets `LogUnavailable`: nothing of it is acknowledged, and the next group
        tries again.
        """
        try:
            results = self._commit_group(group)
        except (OSError, sqlite3.Error) as exc:
            trouble = diagnose(exc, self.directory)
            if trouble is None:
                raise
            if self.trouble is None:
                log.error(
                    "the event log cannot store appends",
                    reason=trouble.message,
                    error=trouble.detail,
                    directory=str(self.directory),
                )
            self.trouble = trouble
            raise LogUnavailable(trouble.message, code=trouble.code) from exc
        if self.trouble is not None:
            log.warning("the event log stores appends again", directory=str(self.directory))
            self.trouble = None
        return results

    def probe(self) -> None:
        """After a refused group: forget the trouble if a small write of our own works now (so
        readiness recovers without an append to find out)."""
        if self.trouble is not None and probe(self.directory) is None:
            self.trouble = None

    def _commit_group(self, group: Sequence[PendingAppend]) -> list[list[AppendResult]]:
        conn = self._reader()
        started = time.perf_counter()
        now_us = max(to_us(self.clock()), self.last_recorded_us)
        recorded = self._recorded_text(now_us)
        # Concurrent appends have no order among them: taken bus by bus, each bus's events of
        # the group are one run, so one chunk.
        owners = [(pending.batch[0].tenant, pending.batch[0].bus) for pending in group]
        if owners.count(owners[0]) == len(owners):
            order: Sequence[int] = range(len(group))  # one bus (the common group): as they came
        else:
            streams, new = self._streams, self._next_stream
            keys = [streams.get(owner, new) for owner in owners]
            order = sorted(range(len(group)), key=keys.__getitem__)
        events = [event for i in order for event in group[i].batch]
        digests = key_digests(events)
        earlier: dict[int, int] = {}
        if self.window_us > 0:
            first_live = self._first_live_at(conn, now_us - self.window_us + 1)
            earlier = self.dedup.find(conn, digests, first_live)
        plan = _Plan(self.next_position, now_us, recorded)
        # The common group has no duplicate, of earlier events or within itself.
        seen = dict(zip(digests, plan.numbered(events), strict=True))
        stored_all: Sequence[bytes] | None = None
        if not earlier and len(seen) == len(events):
            plan.store_all(events)
            stored_all = digests
        else:
            seen = {}
            for i, event in enumerate(events):
                digest = digests[i]
                first = earlier.get(i) or seen.get(digest)
                if first is not None:
                    plan.results.append(AppendResult(AppendStatus.DUPLICATE, first))
                else:
                    seen[digest] = plan.store(event)
            plan.close_run()
        split: list[list[AppendResult]] = [[] for _ in group]
        offset = 0
        for i in order:
            count = len(group[i].batch)
            split[i] = plan.results[offset : offset + count]
            offset += count
        if any(pending.announce is not None for pending in group):
            # Positions, duplicates and the recorded time are fixed: what waits for another
            # copy of these events (a peer site's) starts it now, beside the write and fsync.
            announce_planned(group, split, recorded)
        done = Unindexed()
        if plan.pieces:
            runs = [
                (self._stream_id(tenant, bus, done.streams), start, count)
                for (tenant, bus), start, count in plan.runs
            ]
            try:
                places = self.files.append(plan.pieces)
                self.files.sync()
            except BaseException:
                for stream, tenant, bus in done.streams:
                    del self._streams[(tenant, bus)]
                    self._next_stream = min(self._next_stream, stream)
                raise
            done.marks.append((self.next_position, now_us))
            for (stream, start, count), (file, offset), piece in zip(
                runs, places, plan.pieces, strict=True
            ):
                size = len(piece[0]) + len(piece[1])
                done.chunks.append((start, stream, count, now_us, file, offset, size))
                done.last[stream] = start + count - 1
            done.end = self.files.end
            assert self.head is not None
            self.head.store(*done.end)
            if self._live_mark is None and self.window_us > 0:
                self._live_mark = (self.next_position, now_us)
            self.next_position = plan.position
            self.last_recorded_us = now_us
            froze = self.window_us > 0 and self.dedup.add(
                seen.items(), self.next_position, found=stored_all
            )
            self.indexer.add(done, wake=froze)
        if self._on_commit is not None:
            # The group is durable whatever the observer does; its failure must not fail it.
            with contextlib.suppress(Exception):
                self._on_commit(len(events), time.perf_counter() - started)
        return split

    # -- helpers -------------------------------------------------------------------------------

    def _recorded_text(self, us: int) -> bytes:
        """`format_rfc3339` of a recorded time, as bytes: the text up to the second is made once
        per second (strftime was ~6% of the writer's Python per group of single events)."""
        second, micro = divmod(us, 1_000_000)
        if second != self._recorded_second:
            self._recorded_second = second
            self._recorded_prefix = format_rfc3339(from_us(second * 1_000_000))[:20].encode()
        return b"%s%06dZ" % (self._recorded_prefix, micro)

    def _stream_id(
        self, tenant: TenantName, bus: str, created: list[tuple[int, TenantName, str]]
    ) -> int:
        key = (tenant, bus)
        stream = self._streams.get(key)
        if stream is None:
            stream = self._streams[key] = self._next_stream
            self._next_stream += 1
            created.append((stream, tenant, bus))
        return stream

    def _first_live_at(
        self, conn: sqlite3.Connection, cutoff_us: int, *, remember: bool = True
    ) -> int:
        """The first position recorded at or after `cutoff_us` (the next one if none is).

        Its answer changes only when the window moves past the mark found (the cutoff never
        decreases and marks come in recorded-time order), so it is remembered until then. Marks
        the index lacks are newer than those it has, so the index's answer wins.
        """
        remembered = self._live_mark
        if remember and remembered is not None and cutoff_us <= remembered[1]:
            return remembered[0]
        # Memory first: a mark leaves it only once the index commit that holds it is visible,
        # so one that is not in memory now is in the index for the query after. Asked the other
        # way round, a mark being committed meanwhile is in neither, the window seems empty,
        # and every entry in it passes for expired (a resend is stored again).
        unindexed = self.indexer.mark_since(cutoff_us)
        row = conn.execute(index.FIRST_MARK_SINCE, (cutoff_us,)).fetchone()
        found = (int(row[0]), int(row[1])) if row is not None else unindexed
        if remember:  # only the writer thread remembers: the mark is its
            self._live_mark = found
        return found[0] if found is not None else self.next_position

    def first_live(self, conn: sqlite3.Connection, *, remember: bool = True) -> int:
        """The first position whose dedup entry has not expired (the next one if none)."""
        cutoff = max(to_us(self.clock()), self.last_recorded_us) - self.window_us
        return self._first_live_at(conn, cutoff + 1, remember=remember)

    def _reader(self) -> sqlite3.Connection:
        if self._conn is None:
            raise LogClosed("the event log is not open")
        return self._conn


class _Plan:
    """A group's stored events laid out as chunks, one per run of one bus's events."""

    def __init__(self, position: int, now_us: int, recorded: bytes) -> None:
        self.position = position
        self.now_us = now_us
        self.recorded = recorded
        self.results: list[AppendResult] = []
        self.pieces: list[tuple[bytes, bytes]] = []  # each chunk's parts
        self.runs: list[
            tuple[tuple[TenantName, str], int, int]
        ] = []  # owner, first position, count
        self._owner: tuple[TenantName, str] | None = None
        self._start = position
        self._suffix = b""
        self._bodies: list[bytes] = []
        self._attributes: list[chunks.Attributes] = []

    def numbered(self, events: Sequence[NewEvent]) -> range:
        """The positions `events` get if every one of them is stored."""
        return range(self.position, self.position + len(events))

    def store_all(self, events: Sequence[NewEvent]) -> None:
        """Store every one of `events` (none is a duplicate), a chunk per run of one bus's
        events: built with a comprehension per list rather than a call per event."""
        for owner, run in itertools.groupby(events, key=_owner):
            part = list(run)
            for at in range(0, len(part), MAX_CHUNK_EVENTS):
                self._chunk(owner, part[at : at + MAX_CHUNK_EVENTS])

    def _chunk(self, owner: tuple[TenantName, str], part: Sequence[NewEvent]) -> None:
        tenant, bus = owner
        start, count = self.position, len(part)
        self.pieces.append(
            chunks.encode_parts(
                tenant,
                bus,
                start,
                self.now_us,
                [(e.id, e.source, e.type, e.subject) for e in part],
                [e.body[:-1] for e in part],
                _owned_suffix(tenant, bus, self.recorded),
            )
        )
        self.runs.append((owner, start, count))
        stored = AppendStatus.STORED
        self.results += [AppendResult(stored, p) for p in range(start, start + count)]
        self.position = start + count

    def store(self, event: NewEvent) -> int:
        owner = (event.tenant, event.bus)
        if owner != self._owner or len(self._bodies) == MAX_CHUNK_EVENTS:
            self.close_run()
            self._owner, self._start = owner, self.position
            self._suffix = _owned_suffix(event.tenant, event.bus, self.recorded)
        self._bodies.append(event.body[:-1] + self._suffix)
        self._attributes.append((event.id, event.source, event.type, event.subject))
        position = self.position
        self.results.append(AppendResult(AppendStatus.STORED, position))
        self.position += 1
        return position

    def close_run(self) -> None:
        if self._bodies and self._owner is not None:
            tenant, bus = self._owner
            self.pieces.append(
                chunks.encode_parts(
                    tenant, bus, self._start, self.now_us, self._attributes, self._bodies
                )
            )
            self.runs.append((self._owner, self._start, len(self._bodies)))
        self._bodies, self._attributes = [], []


class Indexer:
    """The indexer thread: index commits every interval, dedup runs, expiry, the index's WAL."""

    def __init__(
        self, committer: GroupCommitter, *, index_interval: float, max_wal_bytes: int
    ) -> None:
        self._committer = committer
        self._interval = index_interval
        self._max_wal_bytes = max_wal_bytes
        self.pending = Unindexed()
        # What `commit` took from `pending`, until its transaction is visible to readers.
        self._committing: Unindexed | None = None
        self._cond = threading.Condition()
        self._stopping = False
        self._conn: sqlite3.Connection | None = None
        self._wal_bound: WalBound | None = None
        self._thread = threading.Thread(target=self._run, name="eventlog-indexer", daemon=True)
        self.on_commit: Callable[[], None] | None = None  # after each commit (checkpoints)
        # Why the last commit failed, if the disk is why; None once one succeeds.
        self.trouble: DiskTrouble | None = None

    def open(self, path: Path) -> sqlite3.Connection:
        self._conn = index.connect(path, role=index.Role.WRITER)
        self._wal_bound = WalBound(path, max_bytes=self._max_wal_bytes)
        return self._conn

    def start(self) -> None:
        self._thread.start()

    def add(self, done: Unindexed, *, wake: bool) -> None:
        """From the writer: a stored group's chunks; `wake` to start at once (a run is due)."""
        with self._cond:
            first = not self.pending
            self.pending.take(done)
            if first or wake or self._interval <= 0 or len(self.pending.chunks) >= INDEX_CHUNKS:
                self._cond.notify()

    def mark_since(self, cutoff_us: int) -> tuple[int, int] | None:
        """The first mark at or after a time that the index does not show yet: pending, or in
        a commit that has not finished."""
        with self._cond:
            for unindexed in (self._committing, self.pending):
                for position, recorded_us in unindexed.marks if unindexed is not None else ():
                    if recorded_us >= cutoff_us:
                        return position, recorded_us
        return None

    def stop(self) -> None:
        """Commit what is pending and end the thread. If the disk refuses, the next open indexes
        it from the files."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join()
        with contextlib.suppress(sqlite3.Error, OSError):
            self.commit()

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()
            self._conn = None

    def _run(self) -> None:
        frozen = self._committer.dedup
        retry = 0.0  # after a failed commit: the wait before the next try, doubling
        while True:
            with self._cond:
                while not (self._stopping or self.pending or frozen.frozen):
                    self._cond.wait()
                if retry > 0:
                    self._cond.wait(retry)
                elif not (self._stopping or frozen.frozen) and self._interval > 0:
                    # Gather an interval's groups, or until enough chunks wait.
                    self._cond.wait(self._interval)
                if self._stopping:
                    return
            try:
                self.commit()
            except (sqlite3.Error, OSError) as exc:
                # Nothing is lost (the files hold it all); tried again until the disk takes it.
                self._failed(exc, first=retry == 0)
                retry = min(MAX_INDEX_RETRY, max(2 * retry, self._interval, 0.01))
            else:
                if retry > 0:
                    log.warning("the event log's index is written again")
                self.trouble = None
                retry = 0.0

    def _failed(self, exc: sqlite3.Error | OSError, *, first: bool) -> None:
        """Note a failed commit: logged once per spell of failures."""
        trouble = diagnose(exc, self._committer.directory)
        if first:
            log.error(
                "the event log's index cannot be written; trying again",
                reason=trouble.message if trouble is not None else None,
                error=f"{type(exc).__name__}: {exc}",
                directory=str(self._committer.directory),
            )
        self.trouble = trouble

    def commit(self) -> None:
        """One index transaction: the pending chunks, a dedup run if one is frozen, a slice of
        expired dedup rows."""
        conn = self._writer_conn()
        committer = self._committer
        with self._cond:
            pending, self.pending = self.pending, Unindexed(end=self.pending.end)
            self._committing = pending
        written = expired = None
        if conn.in_transaction:  # a rollback that failed last time
            conn.execute("ROLLBACK")
        conn.execute("BEGIN IMMEDIATE")
        try:
            if pending.streams:
                conn.executemany(index.INSERT_STREAM, pending.streams)
            if pending.chunks:
                conn.executemany(index.INSERT_CHUNK, pending.chunks)
                conn.executemany(index.INSERT_MARK, pending.marks)
                conn.executemany(index.UPDATE_STREAM, [(p, s) for s, p in pending.last.items()])
            file, end = pending.end
            conn.execute(index.SET_STATE, ("indexed_file", file))
            conn.execute(index.SET_STATE, ("indexed_end", end))
            if committer.window_us > 0:
                first_live = committer.first_live(conn, remember=False)
                written = committer.dedup.write_run(conn, first_live)
                expired = committer.dedup.expire(conn, first_live)
                conn.execute(
                    "DELETE FROM dedup_kept WHERE position < ?", (committer.dedup.flushed_below,)
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):  # tried again before the next commit
                    conn.execute("ROLLBACK")
            with self._cond:  # back in front of what came meanwhile, for the next try
                pending.take(self.pending)
                self.pending, self._committing = pending, None
            raise
        with self._cond:
            self._committing = None
        if written is not None:
            committer.dedup.written(written)
        if expired is not None:
            committer.dedup.expired(*expired)
        if self._wal_bound is not None:
            self._wal_bound.grew(4096 * (1 + len(pending.chunks) // 32))
            self._wal_bound.after_group(conn)
        if self.on_commit is not None:
            self.on_commit()

    def persist_dedup(self) -> None:
        committer = self._committer
        conn = self._writer_conn()
        first_live = committer.first_live(conn, remember=False)
        committer.dedup.persist(conn, committer.next_position, first_live)

    def _writer_conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise LogClosed("the event log is not open")
        return self._conn


_owner: Final[Callable[[NewEvent], tuple[TenantName, str]]] = operator.attrgetter("tenant", "bus")


def _owned_suffix(tenant: TenantName, bus: str, recorded: bytes) -> bytes:
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

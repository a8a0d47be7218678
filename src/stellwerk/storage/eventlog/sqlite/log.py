"""The embedded event log: one SQLite file in WAL mode, one writer thread, group commit.

While one group's commit waits for the disk the next gathers, so fsyncs per second stay near
constant as load grows (docs/storage.md, "The embedded event log").
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar

from stellwerk.clock import from_us, to_us, utc_now
from stellwerk.seams import (
    DEFAULT_DEDUP_WINDOW,
    AppendResult,
    ErasedEvent,
    EraseHook,
    EraseMatch,
    EventLogError,
    LogClosed,
    LogOverloaded,
    NewEvent,
    StoredEvent,
)
from stellwerk.storage.eventlog.contract import CheckedEventLog
from stellwerk.storage.eventlog.sqlite import erase, schema
from stellwerk.storage.eventlog.sqlite.commit import GroupCommitter, first_position_since
from stellwerk.storage.eventlog.sqlite.dedup import FLUSH_ENTRIES
from stellwerk.storage.eventlog.sqlite.segments import decode_meta, unpack_ends
from stellwerk.storage.eventlog.sqlite.writer import Job, LogWriter, PendingAppend
from stellwerk.storage.sqlite import Checkpointer

_T = TypeVar("_T")


class SqliteEventLog(CheckedEventLog):
    """The `EventLog` on one SQLite file, e.g. `SqliteEventLog(data_dir / EVENTS_FILE)`.

    `clock` gives recorded times (a test can move it); `on_commit(events, seconds)` is called in
    the writer thread after each committed group with its number of events and transaction time,
    for metrics. The queue holds at most `max_queue_events` events and `max_queue_bytes` bytes,
    and no append may wait longer than `max_queue_delay` seconds; beyond that `append` raises
    `LogOverloaded`. One batch larger than the bounds is taken when the queue is empty, so every
    batch the HTTP layer allows can get through.

    The dedup entries of the newest `dedup_flush_entries` events are held in memory and written in
    bulk (see `dedup.py`). The WAL is folded into the file by a background thread at most every
    `checkpoint_interval` seconds (None: never in the background), and by the writer itself once the
    WAL file passes `max_wal_bytes` (see `storage/sqlite/checkpoint.py`). An erasure looks at
    `erase_scan_events` events per step and rewrites about `erase_job_bytes` of segments per writer
    transaction (see `erase.py`).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        dedup_window: timedelta = DEFAULT_DEDUP_WINDOW,
        clock: Callable[[], datetime] = utc_now,
        on_commit: Callable[[int, float], None] | None = None,
        max_queue_events: int = 50_000,
        max_queue_bytes: int = 64 * 1024 * 1024,
        max_queue_delay: float = 1.0,
        max_group_events: int = 10_000,
        readers: int = 2,
        dedup_sweep_interval: float = 1.0,
        checkpoint_interval: float | None = 0.1,
        max_wal_bytes: int = 64 * 1024 * 1024,
        dedup_flush_entries: int = FLUSH_ENTRIES,
        erase_scan_events: int = erase.SCAN_EVENTS,
        erase_job_bytes: int = erase.JOB_BYTES,
    ) -> None:
        self.path = Path(path)
        self._erase_scan_events = erase_scan_events
        self._erase_job_bytes = erase_job_bytes
        self._committer = GroupCommitter(
            dedup_window=dedup_window,
            clock=clock,
            on_commit=on_commit,
            sweep_interval=dedup_sweep_interval,
            max_wal_bytes=max_wal_bytes,
            dedup_flush_entries=dedup_flush_entries,
        )
        self._checkpoint_interval = checkpoint_interval
        self._checkpointer: Checkpointer | None = None
        self._max_queue_events = max_queue_events
        self._max_queue_bytes = max_queue_bytes
        self._max_queue_delay = max_queue_delay
        self._readers = readers
        self._writer: LogWriter | None = None
        self._reader_pool: ThreadPoolExecutor | None = None
        self._reader_local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._reader_lock = threading.Lock()
        self._max_group_events = max_group_events

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._writer is not None:
            raise EventLogError("the event log was already started")
        await asyncio.to_thread(self._committer.open, self.path)
        self._reader_pool = ThreadPoolExecutor(self._readers, thread_name_prefix="eventlog-read")
        if self._checkpoint_interval is not None:
            self._checkpointer = Checkpointer(
                functools.partial(schema.connect, self.path, role=schema.Role.CHECKPOINTER),
                interval=self._checkpoint_interval,
                name="eventlog-checkpoint",
            )
            self._checkpointer.start()
        self._writer = LogWriter(
            commit_group=self._committer.commit_group,
            run_job=self._committer.run_job,
            idle=self._between_groups,
            max_group_events=self._max_group_events,
        )
        self._writer.start()

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is None:
            return
        await asyncio.to_thread(writer.stop)
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            await asyncio.to_thread(checkpointer.stop)
        pool, self._reader_pool = self._reader_pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True)
        for conn in self._reader_conns:
            conn.close()
        self._reader_conns.clear()
        self._committer.close()

    async def ping(self) -> None:
        writer = self._running_writer()
        if not writer.alive:
            raise EventLogError("the event log's writer thread has stopped")
        await self._read(lambda conn: conn.execute("SELECT 1").fetchone())

    @property
    def queued_events(self) -> int:
        """Events waiting for the writer (not counting the group being committed)."""
        return self._writer.queued_events if self._writer is not None else 0

    # -- the EventLog protocol -----------------------------------------------------------------

    async def _append(self, batch: Sequence[NewEvent]) -> list[AppendResult]:
        writer = self._running_writer()
        if not batch:
            return []
        size = sum(len(event.body) for event in batch)
        loop = asyncio.get_running_loop()
        pending = PendingAppend(batch, size, loop.create_future(), loop)
        refusal = writer.submit(
            pending,
            max_events=self._max_queue_events,
            max_bytes=self._max_queue_bytes,
            max_delay=self._max_queue_delay,
        )
        if refusal is not None:
            raise LogOverloaded(refusal, retry_after=max(1.0, self._max_queue_delay))
        result: list[AppendResult] = await pending.future
        return result

    async def _read_after(self, tenant: str, bus: str, after: int, limit: int) -> list[StoredEvent]:
        def query(conn: sqlite3.Connection) -> list[StoredEvent]:
            return _read_segments(conn, tenant, bus, after, 2**63 - 1, limit)

        self._running_writer()
        return await self._read(query)

    async def _read_window(
        self, tenant: str, bus: str, start: datetime, end: datetime, after: int, limit: int
    ) -> list[StoredEvent]:
        start_us, end_us = to_us(start), to_us(end)

        def query(conn: sqlite3.Connection) -> list[StoredEvent]:
            if start_us >= end_us:
                return []
            first = first_position_since(conn, start_us)
            if first is None:
                return []
            beyond = first_position_since(conn, end_us)
            upper = beyond if beyond is not None else 2**63 - 1
            return _read_segments(conn, tenant, bus, max(after, first - 1), upper, limit)

        self._running_writer()
        return await self._read(query)

    async def last_position(self, tenant: str, bus: str) -> int:
        def query(conn: sqlite3.Connection) -> int:
            row = conn.execute(schema.LAST_POSITION, (tenant, bus)).fetchone()
            return int(row[0]) if row else 0

        self._running_writer()
        return await self._read(query)

    async def trim(
        self, older_than: datetime, keep: Mapping[tuple[str, str], int] | None = None
    ) -> int:
        """Remove events recorded before `older_than`, a chunk per writer transaction."""
        cut_us = to_us(older_than)
        kept = dict(keep or {})
        total, start = 0, 1
        while start:
            removed, start = await self._submit_job(
                functools.partial(self._committer.trim_chunk, cut_us=cut_us, keep=kept, start=start)
            )
            total += removed
        return total

    async def erase(
        self,
        tenant: str,
        bus: str | None,
        needle: bytes,
        matches: EraseMatch,
        before: EraseHook | None = None,
    ) -> list[ErasedEvent]:
        """Find on a reader, then blank in the writer a few segments per transaction (erase.py)."""
        self._running_writer()
        streams = await self._read(lambda conn: erase.streams_of(conn, tenant, bus))
        erased: list[ErasedEvent] = []
        for stream in streams:
            start = 1
            while start:
                found = await self._read(
                    functools.partial(
                        erase.scan,
                        tenant=tenant,
                        stream=stream,
                        start=start,
                        needle=needle,
                        matches=matches,
                        max_events=self._erase_scan_events,
                    )
                )
                start = found.next_position
                if not found.events:
                    continue
                if before is not None:
                    await before(found.events)
                done: set[int] = set()
                for job in found.jobs(self._erase_job_bytes):
                    done.update(
                        await self._submit_job(
                            functools.partial(self._blank, stream=stream.stream, segments=job)
                        )
                    )
                erased.extend(e for e in found.events if e.position in done)
        return erased

    def _blank(
        self, conn: sqlite3.Connection, stream: int, segments: dict[int, list[int]]
    ) -> list[int]:
        """In the writer thread: blank the entries, keeping their dedup entries (see dedup.py)."""
        last = max(position + max(indexes) for position, indexes in segments.items())
        self._committer.persist_dedup_below(conn, last + 1)
        return erase.blank(conn, stream, segments)

    def _between_groups(self) -> None:
        """In the writer thread after each group or job."""
        if self._checkpointer is not None:
            self._checkpointer.nudge()
        self._committer.housekeeping()

    # -- reading -------------------------------------------------------------------------------

    def _running_writer(self) -> LogWriter:
        writer = self._writer
        if writer is None or not writer.accepting:
            raise LogClosed("the event log is not open")
        return writer

    async def _read(self, query: Callable[[sqlite3.Connection], _T]) -> _T:
        pool = self._reader_pool
        if pool is None:
            raise LogClosed("the event log is not open")
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(pool, lambda: query(self._reader_conn()))
        except RuntimeError:  # the pool shut down between the check and the call
            raise LogClosed("the event log is closing") from None
        return await future

    def _reader_conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._reader_local, "conn", None)
        if conn is None:
            conn = schema.connect(self.path, role=schema.Role.READER)
            self._reader_local.conn = conn
            with self._reader_lock:
                self._reader_conns.append(conn)
        return conn

    # -- the writer thread's side --------------------------------------------------------------

    async def _submit_job(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        writer = self._running_writer()
        loop = asyncio.get_running_loop()
        job = Job(work, loop.create_future(), loop)
        writer.submit_job(job)
        result: _T = await job.future
        return result


def _read_segments(
    conn: sqlite3.Connection, tenant: str, bus: str, after: int, before: int, limit: int
) -> list[StoredEvent]:
    """Up to `limit` events of a bus at positions in `(after, before)`, from its segments."""
    row = conn.execute(schema.STREAM_OF, (tenant, bus)).fetchone()
    if row is None:
        return []
    out: list[StoredEvent] = []
    # One read transaction for all the segments, so they come from one snapshot.
    cursor = conn.execute(schema.READ_SEGMENTS, (row[0], after, before))
    try:
        for position, count, recorded_us, meta, ends, bodies in cursor:
            first = max(0, after + 1 - position)
            last = min(count, before - position)
            if first >= last or not bodies:  # a segment whose events were all erased
                continue
            recorded_time = from_us(recorded_us)
            attributes = decode_meta(meta)
            offsets = unpack_ends(ends)
            start = offsets[first - 1] if first else 0
            for index in range(first, last):
                end = offsets[index]
                if end == start:  # erased: no body, and not counted against `limit`
                    continue
                if len(out) == limit:
                    break
                event_id, source, event_type, subject = attributes[index]
                out.append(
                    StoredEvent(
                        tenant,
                        bus,
                        position + index,
                        event_id,
                        source,
                        event_type,
                        subject,
                        recorded_time,
                        bodies[start:end],
                    )
                )
                start = end
            if len(out) >= limit:
                break
    finally:
        cursor.close()
    return out

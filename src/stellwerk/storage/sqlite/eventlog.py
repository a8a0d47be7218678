"""The embedded event log: one SQLite file in WAL mode, one writer thread, group commit.

Appends wait in a bounded queue. The writer thread takes everything waiting (up to a group size),
stores it in one transaction with `synchronous=FULL`, and only then resolves each caller's future
on its event loop. While one commit waits for the disk, the next group gathers, so the number of
fsyncs per second stays near constant as load grows while events per fsync rise.

Readers have their own connections in a small thread pool; WAL lets them read a consistent
snapshot while the writer commits. Trims and dedup expiry run in the writer thread too, in
chunks between groups, so they never hold the database for long.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Self, TypeVar

import msgspec

from stellwerk.events.rfc3339 import format_rfc3339
from stellwerk.storage.eventlog import (
    DEFAULT_DEDUP_WINDOW,
    DEFAULT_READ_LIMIT,
    AppendResult,
    AppendStatus,
    EventLogError,
    LogClosed,
    LogOverloaded,
    NewEvent,
    StoredEvent,
)
from stellwerk.storage.sqlite import schema
from stellwerk.storage.sqlite.writer import Job, LogWriter, PendingAppend

EVENTS_FILE: Final = "events.db"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_TRIM_CHUNK: Final = 20_000
_encode_json: Final = msgspec.json.Encoder().encode
_T = TypeVar("_T")


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _to_us(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


class SqliteEventLog:
    """The `EventLog` on one SQLite file, e.g. `SqliteEventLog(data_dir / EVENTS_FILE)`.

    `clock` gives recorded times (a test can move it); `on_commit(events, seconds)` is called in
    the writer thread after each committed group with its number of events and transaction time,
    for metrics. The queue holds at most `max_queue_events` events and `max_queue_bytes` bytes,
    and no append may wait longer than `max_queue_delay` seconds; beyond that `append` raises
    `LogOverloaded`. One batch larger than the bounds is taken when the queue is empty, so every
    batch the HTTP layer allows can get through.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        dedup_window: timedelta = DEFAULT_DEDUP_WINDOW,
        clock: Callable[[], datetime] = _utc_now,
        on_commit: Callable[[int, float], None] | None = None,
        max_queue_events: int = 50_000,
        max_queue_bytes: int = 64 * 1024 * 1024,
        max_queue_delay: float = 1.0,
        max_group_events: int = 10_000,
        readers: int = 2,
        dedup_sweep_interval: float = 1.0,
    ) -> None:
        self.path = Path(path)
        self._dedup_window_us = dedup_window // timedelta(microseconds=1)
        self._clock = clock
        self._on_commit = on_commit
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
        # Writer-thread state: owned by the writer thread once started.
        self._conn: sqlite3.Connection | None = None
        self._streams: dict[tuple[str, str], int] = {}
        self._next_position = 1
        self._last_recorded_us = 0
        self._sweep_interval = dedup_sweep_interval
        self._last_sweep = -float("inf")

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._writer is not None:
            raise EventLogError("the event log was already started")
        await asyncio.to_thread(self._open)
        self._reader_pool = ThreadPoolExecutor(self._readers, thread_name_prefix="eventlog-read")
        self._writer = LogWriter(
            commit_group=self._commit_group,
            run_job=self._run_job,
            idle=self._sweep_dedup,
            max_group_events=self._max_group_events,
        )
        self._writer.start()

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is None:
            return
        await asyncio.to_thread(writer.stop)
        if self._reader_pool is not None:
            self._reader_pool.shutdown(wait=True)
        for conn in self._reader_conns:
            conn.close()
        self._reader_conns.clear()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

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

    async def append(self, batch: Sequence[NewEvent]) -> list[AppendResult]:
        writer = self._running_writer()
        if not batch:
            return []
        size = 0
        for event in batch:
            body = event.body
            if len(body) < 3 or body[0] != 0x7B or body[-1] != 0x7D:  # "{...}"
                raise ValueError(f"event {event.id!r}: body must be one compact JSON object")
            size += len(body)
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

    async def read(
        self, tenant: str, bus: str, after: int = 0, limit: int = DEFAULT_READ_LIMIT
    ) -> list[StoredEvent]:
        def query(conn: sqlite3.Connection) -> list[StoredEvent]:
            rows = conn.execute(schema.READ, (tenant, bus, after, limit)).fetchall()
            return _stored(tenant, bus, rows)

        self._running_writer()
        return await self._read(query)

    async def read_window(
        self,
        tenant: str,
        bus: str,
        start: datetime,
        end: datetime,
        after: int = 0,
        limit: int = DEFAULT_READ_LIMIT,
    ) -> list[StoredEvent]:
        start_us, end_us = _to_us(start), _to_us(end)

        def query(conn: sqlite3.Connection) -> list[StoredEvent]:
            if start_us >= end_us:
                return []
            first = _first_position_since(conn, start_us)
            if first is None:
                return []
            beyond = _first_position_since(conn, end_us)
            upper = beyond if beyond is not None else 2**63 - 1
            params = (tenant, bus, max(after, first - 1), upper, limit)
            return _stored(tenant, bus, conn.execute(schema.READ_RANGE, params).fetchall())

        self._running_writer()
        return await self._read(query)

    async def last_position(self, tenant: str, bus: str) -> int:
        def query(conn: sqlite3.Connection) -> int:
            row = conn.execute(schema.LAST_POSITION, (tenant, bus)).fetchone()
            return int(row[0]) if row else 0

        self._running_writer()
        return await self._read(query)

    async def trim(self, older_than: datetime) -> int:
        """Remove events recorded before `older_than`, a chunk per writer transaction."""
        cut_us = _to_us(older_than)
        total = 0
        while True:
            removed: int = await self._submit_job(lambda conn: self._trim_chunk(conn, cut_us))
            if removed == 0:
                return total
            total += removed

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
        return await loop.run_in_executor(pool, lambda: query(self._reader_conn()))

    def _reader_conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._reader_local, "conn", None)
        if conn is None:
            conn = schema.connect(self.path, writer=False)
            self._reader_local.conn = conn
            with self._reader_lock:
                self._reader_conns.append(conn)
        return conn

    # -- the writer thread's side --------------------------------------------------------------

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = schema.connect(self.path, writer=True)
        for stream, tenant, bus, last_position in conn.execute(schema.SELECT_STREAMS):
            self._streams[(tenant, bus)] = stream
            self._next_position = max(self._next_position, last_position + 1)
        row = conn.execute(schema.LAST_MARK).fetchone()
        self._last_recorded_us = row[0] if row else 0
        self._conn = conn

    async def _submit_job(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        writer = self._running_writer()
        loop = asyncio.get_running_loop()
        job = Job(work, loop.create_future(), loop)
        writer.submit_job(job)
        result: _T = await job.future
        return result

    def _run_job(self, job: Job) -> Any:
        conn = self._writer_conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = job.work(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return result

    def _writer_conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise LogClosed("the event log is not open")
        return self._conn

    def _commit_group(self, group: Sequence[PendingAppend]) -> list[list[AppendResult]]:
        """Store a group of appends in one transaction; return each one's results."""
        conn = self._writer_conn()
        started = time.perf_counter()
        now_us = max(_to_us(self._clock()), self._last_recorded_us)
        recorded = format_rfc3339(_from_us(now_us)).encode()
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

    def _sweep_dedup(self) -> None:
        """Drop expired dedup entries, a chunk at a time, at most once per sweep interval."""
        if self._dedup_window_us <= 0 or time.monotonic() - self._last_sweep < self._sweep_interval:
            return
        self._last_sweep = time.monotonic()
        conn = self._writer_conn()
        cutoff = max(_to_us(self._clock()), self._last_recorded_us) - self._dedup_window_us
        first_live = _first_position_since(conn, cutoff + 1) or self._next_position
        lowest = conn.execute(schema.MIN_DEDUP_POSITION).fetchone()[0]
        if lowest is None or lowest >= first_live:
            return
        conn.execute(schema.DELETE_DEDUP_BELOW, (min(first_live, lowest + _TRIM_CHUNK),))

    def _trim_chunk(self, conn: sqlite3.Connection, cut_us: int) -> int:
        cut = _first_position_since(conn, cut_us) or self._next_position
        lowest = conn.execute(schema.MIN_EVENT_POSITION).fetchone()[0]
        if lowest is None or lowest >= cut:
            return 0
        bound = min(cut, lowest + _TRIM_CHUNK)
        removed = conn.execute(schema.DELETE_EVENTS_BELOW, (bound,)).rowcount
        conn.execute(schema.DELETE_MARKS_BELOW, (bound,))
        return removed


def _first_position_since(conn: sqlite3.Connection, moment_us: int) -> int | None:
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


def _stored(tenant: str, bus: str, rows: list[Any]) -> list[StoredEvent]:
    times: dict[int, datetime] = {}
    out: list[StoredEvent] = []
    for position, recorded_us, event_id, source, event_type, subject, body in rows:
        recorded_time = times.get(recorded_us)
        if recorded_time is None:
            recorded_time = times[recorded_us] = _from_us(recorded_us)
        out.append(
            StoredEvent(
                tenant, bus, position, event_id, source, event_type, subject, recorded_time, body
            )
        )
    return out

"""The embedded event log: append-only files, one writer thread, one fsync per group, an index.

Appends wait in a bounded queue. The writer thread takes everything waiting (up to a group
size), writes each bus's events of the group as one chunk to the newest log file, calls
`fdatasync` once, and only then answers each caller on its event loop. While one group waits for
the disk, the next gathers, so the fsyncs per second stay near constant as load grows while the
events per fsync rise. An event is written to disk once (`docs/storage.md` has the figures).

The SQLite index beside the files says where each bus's chunks lie; the writer brings it up to
date every `index_interval` seconds, and readers take the newest chunks from the files. Readers
have their own connections in a small thread pool. Trims and erasures run on a connection of
their own, in this process or in any other that opens the same directory with
`appends=False` (the pipeline process of embedded mode does).
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
from typing import Final, TypeVar

import structlog

from stellwerk.clock import to_us, utc_now
from stellwerk.refs import BusRef, TenantName
from stellwerk.seams import (
    DEFAULT_DEDUP_WINDOW,
    Announce,
    AppendResult,
    ErasedEvent,
    EraseHook,
    EraseMatch,
    EventLogError,
    LogClosed,
    LogOverloaded,
    LogUnavailable,
    NewEvent,
    StoredEvent,
)
from stellwerk.storage.eventlog.contract import CheckedEventLog
from stellwerk.storage.eventlog.sqlite import index, upkeep
from stellwerk.storage.eventlog.sqlite.commit import INDEX_INTERVAL, GroupCommitter
from stellwerk.storage.eventlog.sqlite.dedup import EPOCH_ENTRIES, RUN_ENTRIES, Dedup
from stellwerk.storage.eventlog.sqlite.head import HEAD_FILE, Head
from stellwerk.storage.eventlog.sqlite.logfiles import MAX_FILE_BYTES, LogFiles
from stellwerk.storage.eventlog.sqlite.migrate import move_legacy_log
from stellwerk.storage.eventlog.sqlite.reads import NO_LIMIT, Reader, Tail, window_bounds
from stellwerk.storage.eventlog.sqlite.writer import LogWriter, PendingAppend
from stellwerk.storage.sqlite import RUN_DIR, WRITER_LOCK, Checkpointer, FileLock

log = structlog.stdlib.get_logger(__name__)

TRIM_INDEX_WAIT: Final = 5.0
TRIM_INDEX_POLL: Final = 0.01
_T = TypeVar("_T")


class SqliteEventLog(CheckedEventLog):
    """The `EventLog` in a directory, e.g. `SqliteEventLog(data_dir / LOG_DIR)`.

    With `appends=False` the log only reads, trims and erases: another process writes it. A log
    kept in one SQLite file by an earlier version (`legacy`, an `events.db`) is moved into the
    directory on the first start (`migrate.py`).
    `clock` gives recorded times (a test can move it); `on_commit(events, seconds)` is called in
    the writer thread after each stored group, for metrics. The queue holds at most
    `max_queue_events` events and `max_queue_bytes` bytes, and no append may wait longer than
    `max_queue_delay` seconds; beyond that `append` raises `LogOverloaded`. One batch larger than
    the bounds is taken when the queue is empty, so every batch the HTTP layer allows gets
    through.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        appends: bool = True,
        legacy: Path | None = None,
        dedup_window: timedelta = DEFAULT_DEDUP_WINDOW,
        clock: Callable[[], datetime] = utc_now,
        on_commit: Callable[[int, float], None] | None = None,
        max_queue_events: int = 50_000,
        max_queue_bytes: int = 64 * 1024 * 1024,
        max_queue_delay: float = 1.0,
        max_group_events: int = 10_000,
        readers: int = 2,
        index_interval: float = INDEX_INTERVAL,
        checkpoint_interval: float | None = 0.1,
        max_wal_bytes: int = 64 * 1024 * 1024,
        max_file_bytes: int = MAX_FILE_BYTES,
        dedup_run_entries: int = RUN_ENTRIES,
        dedup_epoch_entries: int = EPOCH_ENTRIES,
    ) -> None:
        self.directory = Path(directory)
        self._appends = appends
        self._legacy = legacy
        self._window = dedup_window
        self._clock = clock
        self._readers = readers
        self._max_queue_events = max_queue_events
        self._max_queue_bytes = max_queue_bytes
        self._max_queue_delay = max_queue_delay
        self._max_group_events = max_group_events
        self._checkpoint_interval = checkpoint_interval
        self._committer = (
            GroupCommitter(
                self.directory,
                dedup_window=dedup_window,
                clock=clock,
                on_commit=on_commit,
                index_interval=index_interval,
                max_wal_bytes=max_wal_bytes,
                max_file_bytes=max_file_bytes,
                dedup=Dedup(run_entries=dedup_run_entries, epoch_entries=dedup_epoch_entries),
            )
            if appends
            else None
        )
        self._files: LogFiles | None = None
        self._head: Head | None = None
        self._tail: Tail | None = None
        self._writer: LogWriter | None = None
        self._checkpointer: Checkpointer | None = None
        self._reader_pool: ThreadPoolExecutor | None = None
        self._upkeep_pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._open = False
        # One process appends at a time: two writers would hand out the same positions. The
        # lock is beside the directory, not in it: a log still to be moved in has none yet.
        self._writer_lock = FileLock(self.directory.parent / RUN_DIR / WRITER_LOCK)

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._open:
            raise EventLogError("the event log was already started")
        committer = self._committer
        if committer is not None:
            await self._writer_lock.acquire(waiting=self._say_waiting)
            try:
                if self._legacy is not None:
                    await asyncio.to_thread(move_legacy_log, self._legacy, self.directory)
                await asyncio.to_thread(committer.open)
            except BaseException:
                self._writer_lock.release()
                raise
            self._files, self._head = committer.files, committer.head
            if self._checkpoint_interval is not None:
                self._checkpointer = Checkpointer(
                    functools.partial(
                        index.connect, self._index_path, role=index.Role.CHECKPOINTER
                    ),
                    interval=self._checkpoint_interval,
                    name="eventlog-checkpoint",
                )
                self._checkpointer.start()
                committer.indexer.on_commit = self._checkpointer.nudge
            self._writer = LogWriter(
                commit_group=committer.commit_group, max_group_events=self._max_group_events
            )
            self._writer.start()
        else:
            self._files = LogFiles(self.directory)
            self._head = await asyncio.to_thread(_wait_for_head, self.directory / HEAD_FILE)
        assert self._files is not None
        assert self._head is not None
        self._tail = Tail(self._files, self._head)
        self._reader_pool = ThreadPoolExecutor(self._readers, thread_name_prefix="eventlog-read")
        self._upkeep_pool = ThreadPoolExecutor(1, thread_name_prefix="eventlog-upkeep")
        self._open = True

    async def close(self) -> None:
        if not self._open:
            return
        self._open = False
        writer, self._writer = self._writer, None
        if writer is not None:
            await asyncio.to_thread(writer.stop)
        for pool in (self._reader_pool, self._upkeep_pool):
            if pool is not None:
                await asyncio.to_thread(pool.shutdown, wait=True)
        self._reader_pool = self._upkeep_pool = None
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            await asyncio.to_thread(checkpointer.stop)
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()
        if self._committer is not None:
            try:
                await asyncio.to_thread(self._committer.close)
            finally:
                self._writer_lock.release()
        else:
            if self._files is not None:
                self._files.close()
            if self._head is not None:
                self._head.close()

    def _say_waiting(self, holder: int | None) -> None:
        log.warning(
            "waiting for the event log: another process appends to it, and one writer at a "
            "time may; this one goes on when that one stops",
            lock=str(self._writer_lock.path),
            holder_pid=holder,
        )

    async def ping(self) -> None:
        """Raise if the log cannot serve: `LogUnavailable` while its disk refuses writes."""
        self._check_open()
        if self._writer is not None and not self._writer.alive:
            raise EventLogError("the event log's writer thread has stopped")
        committer = self._committer
        if committer is not None:
            if committer.trouble is not None:
                await asyncio.to_thread(committer.probe)
            trouble = committer.indexer.trouble or committer.trouble
            if trouble is not None:
                raise LogUnavailable(trouble.message, code=trouble.code)
        await self._read(lambda reader: reader.last_position(TenantName(""), ""))

    @property
    def queued_events(self) -> int:
        """Events waiting for the writer (not counting the group being stored)."""
        return self._writer.queued_events if self._writer is not None else 0

    # -- the EventLog protocol -----------------------------------------------------------------

    async def _append(
        self, batch: Sequence[NewEvent], announce: Announce | None
    ) -> list[AppendResult]:
        writer = self._writer
        if writer is None or not writer.accepting:
            if self._open and self._committer is None:
                raise EventLogError("this process reads the log; another one appends to it")
            raise LogClosed("the event log is not open")
        if not batch:
            return []
        if self._committer is not None and (trouble := self._committer.indexer.trouble):
            # The room left is the index's, to catch up: appends wait until it has. (A failed
            # group, by contrast, is no reason to refuse the next: that one tries the disk.)
            raise LogUnavailable(trouble.message, code=trouble.code)
        size = sum(len(event.body) for event in batch)
        loop = asyncio.get_running_loop()
        pending = PendingAppend(batch, size, loop.create_future(), loop, announce)
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

    async def _read_after(self, bus: BusRef, after: int, limit: int) -> list[StoredEvent]:
        return await self._read(
            lambda reader: reader.read(bus.tenant, bus.bus, after, NO_LIMIT, limit)
        )

    async def _read_window(
        self, bus: BusRef, start: datetime, end: datetime, after: int, limit: int
    ) -> list[StoredEvent]:
        def query(reader: Reader) -> list[StoredEvent]:
            bounds = window_bounds(reader, start, end)
            if bounds is None:
                return []
            first, before = bounds
            return reader.read(bus.tenant, bus.bus, max(after, first), before, limit)

        return await self._read(query)

    async def last_position(self, bus: BusRef) -> int:
        return await self._read(lambda reader: reader.last_position(bus.tenant, bus.bus))

    async def trim(self, older_than: datetime, keep: Mapping[BusRef, int] | None = None) -> int:
        """Remove events recorded before `older_than`, a chunk range per transaction."""
        files = self._check_open()
        await self._index_caught_up()
        kept = dict(keep or {})
        window_us = self._window // timedelta(microseconds=1)
        total, start = 0, 1
        while start:
            removed, start = await self._upkeep(
                functools.partial(
                    upkeep.trim_chunk,
                    files=files,
                    cut_us=to_us(older_than),
                    now_us=to_us(self._clock()),
                    keep=kept,
                    start=start,
                    window_us=window_us,
                )
            )
            total += removed
        return total

    async def erase(
        self,
        tenant: TenantName,
        bus: str | None,
        needle: bytes,
        matches: EraseMatch,
        before: EraseHook | None = None,
    ) -> list[ErasedEvent]:
        """Find the events on a reader, then blank them a chunk at a time (upkeep.py)."""
        files = self._check_open()
        buses = [bus] if bus is not None else await self._read(lambda r: r.buses(tenant))
        erased: list[ErasedEvent] = []
        for name in buses:
            upto = await self.last_position(BusRef(tenant, name)) + 1  # events from now on stay

            def find(reader: Reader, bus: str = name, upto: int = upto) -> list[upkeep.Found]:
                return list(upkeep.scan(reader, tenant, bus, needle, matches, upto))

            for chunk in await self._read(find):
                if before is not None:
                    await before(chunk.events)
                await self._upkeep(functools.partial(upkeep.blank, files=files, found=chunk))
                erased.extend(chunk.events)
        return erased

    # -- plumbing ------------------------------------------------------------------------------

    async def _index_caught_up(self) -> None:
        """Wait (a while) until the index covers what is durable now: trims work on the index.

        The writer, perhaps in another process, brings it up to date every index interval; if
        it does not within `TRIM_INDEX_WAIT`, the trim goes on with what is indexed, which only
        keeps more events than asked.
        """
        assert self._head is not None
        head = self._head.load()
        deadline = asyncio.get_running_loop().time() + TRIM_INDEX_WAIT
        while await self._read(lambda reader: reader.indexed() < head):
            if asyncio.get_running_loop().time() > deadline:
                return
            await asyncio.sleep(TRIM_INDEX_POLL)

    @property
    def _index_path(self) -> Path:
        return self.directory / index.INDEX_FILE

    def _check_open(self) -> LogFiles:
        if not self._open or self._files is None:
            raise LogClosed("the event log is not open")
        return self._files

    async def _read(self, query: Callable[[Reader], _T]) -> _T:
        self._check_open()
        pool = self._reader_pool
        if pool is None:
            raise LogClosed("the event log is not open")
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(pool, lambda: query(self._reader()))
        except RuntimeError:  # the pool shut down between the check and the call
            raise LogClosed("the event log is closing") from None
        return await future

    async def _upkeep(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        self._check_open()
        pool = self._upkeep_pool
        if pool is None:
            raise LogClosed("the event log is not open")
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(pool, lambda: work(self._conn(index.Role.UPKEEP)))
        except RuntimeError:
            raise LogClosed("the event log is closing") from None
        return await future

    def _reader(self) -> Reader:
        reader: Reader | None = getattr(self._local, "reader", None)
        if reader is None:
            assert self._files is not None
            assert self._tail is not None
            reader = Reader(self._conn(index.Role.READER), self._files, self._tail)
            self._local.reader = reader
        return reader

    def _conn(self, role: index.Role) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, role.value, None)
        if conn is None:
            conn = index.connect(self._index_path, role=role)
            setattr(self._local, role.value, conn)
            with self._conns_lock:
                self._conns.append(conn)
        return conn


def _wait_for_head(path: Path, timeout: float = 30.0) -> Head:
    """A reading process may start before the writer made the head: wait for it a while."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            return Head(path)
        except FileNotFoundError:
            if time.monotonic() > deadline:
                raise LogClosed(f"no log at {path.parent}: its writer has not started") from None
            time.sleep(0.05)

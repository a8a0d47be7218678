"""The SQLite engine: one writer thread with group commit, a reader pool and the WAL's upkeep, for
every store that keeps its tables in one database file.

Stores submit jobs (functions of the writer's connection) through a `Handle`; the writer takes
every job waiting, runs each in a SAVEPOINT of one transaction, commits once and resolves the
callers on their own loops. A group is synced (`synchronous=FULL`) only if one of its jobs asks
for it. Why, and which jobs do: docs/storage.md, "The SQLite engine".
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, TypeVar

from stellwerk.storage.sqlite.checkpoint import Checkpointer, WalBound
from stellwerk.storage.sqlite.connect import MAX_WAL_BYTES, Role, connect
from stellwerk.storage.sqlite.handle import Handle, Job, Work

_T = TypeVar("_T")

MAX_WAITING: Final = 10_000  # jobs queued before submitters wait for room
LATER_SECONDS: Final = 1.0  # how long a write nobody waits for may wait for company
CLOSE_BUSY_MS: Final = 200  # the last checkpoint does not wait long for another process


class Engine:
    """One database file, one writer thread, `readers` reader threads.

    Opened by the first `acquire()` and closed by the last `release()`, so the stores sharing it
    open and close it by themselves. `setup` runs on the writer's connection when it opens.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        readers: int = 2,
        setup: Sequence[Callable[[sqlite3.Connection], None]] = (),
        max_waiting: int = MAX_WAITING,
        max_wal_bytes: int = MAX_WAL_BYTES,
        later_seconds: float = LATER_SECONDS,
    ) -> None:
        self.path = Path(path)
        self.name = name or self.path.stem
        self._readers = readers
        self._setup = tuple(setup)
        self._max_waiting = max_waiting
        self._max_wal_bytes = max_wal_bytes
        self._later_seconds = later_seconds
        self._life = threading.Lock()  # opening and closing; never taken by the threads it stops
        self._lock = threading.Lock()  # the handles and the readers' connections
        self._users = 0
        self._handles: list[Handle] = []
        self._cond = threading.Condition()
        self._queue: deque[Job[Any]] = deque()
        self._later: list[Job[Any]] = []
        self._later_due = 0.0
        self._room: list[asyncio.Future[Any]] = []
        self._accepting = False
        self._conn: sqlite3.Connection | None = None
        self._thread: threading.Thread | None = None
        self._checkpointer: Checkpointer | None = None
        self._wal_bound: WalBound | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._full = False  # the writer's `synchronous` is FULL (else NORMAL)
        self._unsynced = False  # a commit since the last sync is not on disk yet
        self._data_version: int | None = None
        self.groups = 0
        self.syncs = 0

    def handle(
        self,
        name: str,
        *,
        closed: type[Exception],
        failed: type[Exception],
        on_rollback: Callable[[], None] | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> Handle:
        """A store's handle; `open` it before use."""
        return Handle(
            self, name, closed=closed, failed=failed, on_rollback=on_rollback, on_change=on_change
        )

    def register(self, handle: Handle) -> None:
        with self._lock:
            self._handles.append(handle)

    def unregister(self, handle: Handle) -> None:
        with self._lock:
            if handle in self._handles:
                self._handles.remove(handle)

    @property
    def waiting(self) -> int:
        """Jobs queued for the writer (not counting writes nobody waits for)."""
        return len(self._queue)

    # -- lifecycle -----------------------------------------------------------------------------

    async def acquire(self) -> None:
        await asyncio.to_thread(self._acquire)

    async def release(self) -> None:
        await asyncio.to_thread(self._release)

    def _acquire(self) -> None:
        with self._life:
            if self._users == 0:
                self._open()
            self._users += 1

    def _release(self) -> None:
        with self._life:
            if self._users == 0:
                return
            self._users -= 1
            if self._users == 0:
                self._close()

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = connect(self.path, Role.WRITER, max_wal_bytes=self._max_wal_bytes)
        try:
            for step in self._setup:
                step(conn)
            self._data_version = conn.execute("PRAGMA data_version").fetchone()[0]
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._full = False
        self._checkpointer = Checkpointer(
            functools.partial(connect, self.path, Role.CHECKPOINTER),
            name=f"{self.name}-checkpoint",
        )
        self._checkpointer.start()
        self._wal_bound = WalBound(self.path, max_bytes=self._max_wal_bytes)
        self._pool = ThreadPoolExecutor(self._readers, thread_name_prefix=f"{self.name}-read")
        with self._cond:
            self._accepting = True
        self._thread = threading.Thread(target=self._run, name=f"{self.name}-writer", daemon=True)
        self._thread.start()

    def _close(self) -> None:
        with self._cond:
            self._accepting = False
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        for reader in self._reader_conns:
            reader.close()
        self._reader_conns.clear()
        conn, self._conn = self._conn, None
        if conn is not None:
            # A stopped engine leaves one compact file, unless another process is writing it
            # (then its own close folds the WAL in); failing here loses nothing.
            with contextlib.suppress(sqlite3.Error):
                conn.execute(f"PRAGMA busy_timeout = {CLOSE_BUSY_MS}")
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.close()

    # -- submitting ----------------------------------------------------------------------------

    async def enqueue(self, job: Job[Any]) -> None:
        while True:
            with self._cond:
                if not self._accepting:
                    raise job.handle.closing()
                if len(self._queue) < self._max_waiting:
                    self._queue.append(job)
                    self._cond.notify()
                    return
                room: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
                self._room.append(room)
            await room

    def enqueue_later(self, job: Job[Any]) -> None:
        with self._cond:
            if not self._accepting:
                raise job.handle.closing()
            if not self._later:
                self._later_due = time.monotonic() + self._later_seconds
            self._later.append(job)
            self._cond.notify()

    async def read(self, handle: Handle, query: Work[_T]) -> _T:
        pool = self._pool
        if pool is None:
            raise handle.closing()
        try:
            future = asyncio.get_running_loop().run_in_executor(
                pool, lambda: query(self._reader_conn())
            )
        except RuntimeError:  # shut down between the check and the call
            raise handle.closing() from None
        return await future

    def grew(self, stored: int) -> None:
        if self._wal_bound is not None:
            self._wal_bound.grew(stored)

    def _reader_conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = connect(self.path, Role.READER)
            with self._lock:
                self._reader_conns.append(conn)
        return conn

    # -- the writer thread ---------------------------------------------------------------------

    def _take(self) -> list[Job[Any]] | None:
        with self._cond:
            while not self._queue and self._accepting:
                if not self._later:
                    self._cond.wait()
                    continue
                left = self._later_due - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            group = list(self._queue)
            self._queue.clear()
            # Writes nobody waits for join a group that writes anyway (not one of reads alone,
            # which commits nothing), or go by themselves once due.
            if self._later and (
                not self._accepting
                or time.monotonic() >= self._later_due
                or any(job.writes for job in group)
            ):
                group.extend(self._later)
                self._later.clear()
            room, self._room = self._room, []
        for loop, pairs in _by_loop((waiter, None) for waiter in room):  # room again
            _resolve(loop, pairs)
        return group or None

    def _run(self) -> None:
        try:
            while (group := self._take()) is not None:
                self._group(group)
        finally:
            with self._cond:
                self._accepting = False
                left = [*self._queue, *self._later]
                self._queue.clear()
                self._later.clear()
            for loop, pairs in _by_loop(
                (job.future, job.handle.closing()) for job in left if job.future is not None
            ):
                _resolve(loop, pairs)

    def _group(self, group: list[Job[Any]]) -> None:
        conn = self._conn
        assert conn is not None
        self.groups += 1
        reads = [job for job in group if not job.writes]
        writes = [job for job in group if job.writes]
        if reads:
            # Leases and synced reads do not wait for the writes' commit.
            outcomes = self._transaction(conn, reads, writes=False)
            if any(job.synced for job in reads):
                self._sync(conn)
            self._settle(reads, outcomes)
        if writes:
            synced = any(job.synced for job in writes)
            if synced is not self._full:
                conn.execute(f"PRAGMA synchronous = {'FULL' if synced else 'NORMAL'}")
                self._full = synced
            changes = conn.total_changes
            outcomes = self._transaction(conn, writes, writes=True)
            if conn.total_changes != changes:
                self._unsynced = not synced
            self._settle(writes, outcomes)
            if self._checkpointer is not None:
                self._checkpointer.nudge()
            if self._wal_bound is not None:
                self._wal_bound.after_group(conn)

    def _transaction(
        self, conn: sqlite3.Connection, jobs: list[Job[Any]], *, writes: bool
    ) -> list[Any]:
        outcomes: list[Any] = []
        try:
            # A group that only reads takes no write lock and commits nothing.
            conn.execute("BEGIN IMMEDIATE" if writes else "BEGIN")
            self._look_for_changes(conn)
            for job in jobs:
                conn.execute("SAVEPOINT job")
                try:
                    outcomes.append(job.work(conn))
                except Exception as exc:
                    conn.execute("ROLLBACK TO job")
                    _tell(job.handle.on_rollback)
                    outcomes.append(exc)
                conn.execute("RELEASE job")
            conn.execute("COMMIT")
        except Exception as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            outcomes = []
            for job in jobs:
                _tell(job.handle.on_rollback)
                failure = job.handle.failed(f"{job.handle.name} could not commit: {exc}")
                failure.__cause__ = exc
                outcomes.append(failure)
        return outcomes

    def _look_for_changes(self, conn: sqlite3.Connection) -> None:
        """Tell every store when another connection (another process) committed to the file
        since this one last looked: read inside the transaction, so it covers its snapshot."""
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        if version != self._data_version:
            self._data_version = version
            with self._lock:
                handles = list(self._handles)
            for handle in handles:
                _tell(handle.on_change)

    def _sync(self, conn: sqlite3.Connection) -> None:
        """Make every commit so far durable without writing anything: WAL frames are written in
        order, so an fsync of the WAL covers all earlier unsynced commits."""
        if not self._unsynced:
            return
        wal = self.path.with_name(self.path.name + "-wal")
        try:
            fd = os.open(wal, os.O_RDONLY)
        except FileNotFoundError:
            self._unsynced = False  # checkpointed and removed: the checkpoint synced the file
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self._unsynced = False
        self.syncs += 1

    def _settle(self, jobs: list[Job[Any]], outcomes: list[Any]) -> None:
        for loop, pairs in _by_loop(
            (job.future, outcome)
            for job, outcome in zip(jobs, outcomes, strict=True)
            if job.future is not None
        ):
            _resolve(loop, pairs)


Pair = tuple[asyncio.Future[Any], Any]


def _by_loop(pairs: Iterable[Pair]) -> list[tuple[asyncio.AbstractEventLoop, list[Pair]]]:
    """Outcomes grouped by their future's loop: one wake-up per loop and group."""
    grouped: dict[asyncio.AbstractEventLoop, list[Pair]] = {}
    for future, outcome in pairs:
        grouped.setdefault(future.get_loop(), []).append((future, outcome))
    return list(grouped.items())


def _resolve(loop: asyncio.AbstractEventLoop, pairs: list[Pair]) -> None:
    # A closed loop raises RuntimeError: nobody is waiting there any more.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(_set_outcomes, pairs)


def _set_outcomes(pairs: list[Pair]) -> None:
    for future, outcome in pairs:
        if future.done():
            continue  # the caller gave up (cancelled): the outcome has no one to go to
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


def _tell(hook: Callable[[], None]) -> None:
    # A store's hook only marks its memory stale; its failure must not stop the writer.
    with contextlib.suppress(Exception):
        hook()

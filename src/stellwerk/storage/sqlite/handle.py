"""A store's way into the SQLite engine (`Handle`) and the jobs it submits (`Job`).

A job is a function of the writer's connection; the handle says with which exceptions the store's
jobs fail, and hears for the store when its work was rolled back or another connection committed.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from stellwerk.storage.sqlite.engine import Engine

_T = TypeVar("_T")
Work = Callable[[sqlite3.Connection], _T]


class Job(Generic[_T]):
    """One submitted piece of work and the future its caller waits on (None: nobody waits)."""

    __slots__ = ("future", "handle", "loop", "synced", "work", "writes")

    def __init__(
        self,
        handle: Handle,
        work: Work[_T],
        *,
        writes: bool,
        synced: bool,
        loop: asyncio.AbstractEventLoop | None,
    ) -> None:
        self.handle = handle
        self.work = work
        self.writes = writes
        self.synced = synced
        self.loop = loop
        self.future: asyncio.Future[_T] | None = None if loop is None else loop.create_future()


class Handle:
    """A store's way into an engine: its jobs fail with its own exceptions (`closed`, `failed`),
    and it hears when its work was rolled back or another connection committed (`on_change`:
    whatever the store keeps in memory about the file may be stale). Both run in the writer."""

    def __init__(
        self,
        engine: Engine,
        name: str,
        *,
        closed: type[Exception],
        failed: type[Exception],
        on_rollback: Callable[[], None] | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.engine = engine
        self.name = name
        self.closed = closed
        self.failed = failed
        self.on_rollback = on_rollback or _nothing
        self.on_change = on_change or _nothing

    async def open(self, tables: Work[Any] | None = None) -> None:
        """Open the engine for this store (the first one opens it) and create the store's
        `tables` (in a synced write)."""
        await self.engine.acquire()
        self.engine.register(self)
        if tables is not None:
            try:
                await self.write(tables, synced=True)
            except BaseException:
                await self.close()
                raise

    async def close(self) -> None:
        """The store is done with the engine (the last one closes it)."""
        self.engine.unregister(self)
        await self.engine.release()

    async def write(self, work: Work[_T], *, synced: bool) -> _T:
        """Run `work` in the next group's write transaction; `synced`: on disk when it returns,
        not only safe from a crash of the process."""
        job = self.job(work, writes=True, synced=synced)
        await self.submit(job)
        assert job.future is not None
        return await job.future

    async def inside(self, work: Work[_T], *, synced: bool = False) -> _T:
        """Run `work` in the writer thread in a read-only transaction, before the group's writes
        (it may use what the writer keeps in memory). `synced`: everything this engine committed
        before is on disk when it returns."""
        job = self.job(work, writes=False, synced=synced)
        await self.submit(job)
        assert job.future is not None
        return await job.future

    def later(self, work: Work[Any]) -> None:
        """Write `work` with the next group, or within `LATER_SECONDS` when none comes: for what
        may be lost in a crash (the caller does not wait, and hears of a failure only through
        `on_rollback`)."""
        self.engine.enqueue_later(Job(self, work, writes=True, synced=False, loop=None))

    def job(self, work: Work[_T], *, writes: bool, synced: bool) -> Job[_T]:
        return Job(self, work, writes=writes, synced=synced, loop=asyncio.get_running_loop())

    async def submit(self, job: Job[Any]) -> None:
        """Queue `job`, waiting while the queue is full."""
        await self.engine.enqueue(job)

    async def read(self, query: Work[_T]) -> _T:
        """Run `query` on a reader connection: a snapshot beside the writer."""
        return await self.engine.read(self, query)

    def grew(self, stored: int) -> None:
        """Called by a job: it stored about `stored` bytes (for the WAL's bound)."""
        self.engine.grew(stored)

    def closing(self) -> Exception:
        return self.closed(f"{self.name} is not open")


def _nothing() -> None:
    return None

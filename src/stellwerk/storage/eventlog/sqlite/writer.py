"""The event log's single writer thread: a bounded queue of appends, taken in groups.

The thread knows nothing about files or SQL. It takes every append waiting (up to a group size)
and hands the group to `commit_group`. Callers are resolved on their own event loops, one
`call_soon_threadsafe` per loop and group rather than per request, because waking a loop costs
more than the resolution itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from stellwerk.seams import AppendResult, EventLogError, LogClosed, LogUnavailable, NewEvent


class PendingAppend:
    """One `append` call waiting for its commit."""

    __slots__ = ("batch", "enqueued", "future", "loop", "size")

    def __init__(
        self,
        batch: Sequence[NewEvent],
        size: int,
        future: asyncio.Future[list[AppendResult]],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.batch = batch
        self.size = size
        self.future = future
        self.loop = loop
        self.enqueued = time.monotonic()


class LogWriter:
    """Runs `commit_group` in one thread, in arrival order."""

    def __init__(
        self,
        *,
        commit_group: Callable[[Sequence[PendingAppend]], list[list[AppendResult]]],
        max_group_events: int,
    ) -> None:
        self._commit_group = commit_group
        self._max_group_events = max_group_events
        self._cond = threading.Condition()
        self._queue: deque[PendingAppend] = deque()
        self._queued_events = 0
        self._queued_bytes = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="eventlog-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Finish what is queued, then end the thread; blocks until it has ended."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join()

    @property
    def accepting(self) -> bool:
        return not self._stopping and self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def queued_events(self) -> int:
        return self._queued_events

    def submit(
        self, pending: PendingAppend, *, max_events: int, max_bytes: int, max_delay: float
    ) -> str | None:
        """Queue an append, or return why not (the queue is over a bound)."""
        events = len(pending.batch)
        with self._cond:
            if self._stopping:
                raise LogClosed("the event log is closing")
            if self._queue:
                if self._queued_events + events > max_events:
                    return f"{self._queued_events} events are waiting to be written"
                if self._queued_bytes + pending.size > max_bytes:
                    return f"{self._queued_bytes} bytes are waiting to be written"
                waited = pending.enqueued - self._queue[0].enqueued
                if waited > max_delay:
                    return f"the oldest waiting append has waited {waited:.2f} s"
            self._queue.append(pending)
            self._queued_events += events
            self._queued_bytes += pending.size
            self._cond.notify()
        return None

    def _take(self) -> list[PendingAppend] | None:
        """The next group; None: stop."""
        with self._cond:
            while not self._queue and not self._stopping:
                self._cond.wait()
            if not self._queue:
                return None
            group: list[PendingAppend] = []
            events = 0
            while self._queue:
                item = self._queue[0]
                if group and events + len(item.batch) > self._max_group_events:
                    break
                self._queue.popleft()
                group.append(item)
                events += len(item.batch)
                self._queued_bytes -= item.size
            self._queued_events -= events
            return group

    def _run(self) -> None:
        try:
            while (group := self._take()) is not None:
                self._execute_group(group)
        finally:
            with self._cond:
                self._stopping = True
                left = list(self._queue)
                self._queue.clear()
            for item in left:
                _resolve(item.loop, [(item.future, LogClosed("the event log closed"))])

    def _execute_group(self, group: list[PendingAppend]) -> None:
        outcomes: list[Any]
        try:
            outcomes = self._commit_group(group)
        except LogUnavailable as exc:
            outcomes = [exc.again() for _ in group]
        except Exception as exc:
            # One exception object per caller: each gets its own traceback when it raises.
            outcomes = [_store_failure(exc) for _ in group]
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any]]] = {}
        for pending, outcome in zip(group, outcomes, strict=True):
            by_loop.setdefault(pending.loop, []).append((pending.future, outcome))
        for loop, pairs in by_loop.items():
            _resolve(loop, pairs)


def _resolve(loop: asyncio.AbstractEventLoop, pairs: list[tuple[asyncio.Future[Any], Any]]) -> None:
    # A closed loop raises RuntimeError: nobody is waiting there any more.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(_settle, pairs)


def _settle(pairs: list[tuple[asyncio.Future[Any], Any]]) -> None:
    for future, outcome in pairs:
        if future.done():
            continue  # The caller gave up (cancelled); the outcome has no one to go to.
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


def _store_failure(cause: Exception) -> EventLogError:
    failure = EventLogError(f"the append could not be stored: {cause}")
    failure.__cause__ = cause
    return failure

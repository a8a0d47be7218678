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

from stellwerk.seams import (
    Announce,
    AppendResult,
    EventLogError,
    LogClosed,
    LogUnavailable,
    NewEvent,
)


class PendingAppend:
    """One `append` call waiting for its commit."""

    __slots__ = ("announce", "batch", "enqueued", "future", "loop", "size")

    def __init__(
        self,
        batch: Sequence[NewEvent],
        size: int,
        future: asyncio.Future[list[AppendResult]],
        loop: asyncio.AbstractEventLoop,
        announce: Announce | None = None,
    ) -> None:
        self.batch = batch
        self.size = size
        self.future = future
        self.loop = loop
        self.announce = announce
        self.enqueued = time.monotonic()


class LogWriter:
    """Runs `commit_group` in one thread, in arrival order.

    Appends are handed over without a lock that the writer thread takes: a deque (its `append`
    and `popleft` are atomic), counters that each have one writing side (submitters add, the
    writer subtracts, by counting what it took), and an event set only when the writer sleeps.
    While a group is being stored, which is most of the time under load, a submit is a deque
    append and nothing more: no lock shared with the writer, so the loop thread never waits for
    the writer to let go of one (and then for the GIL), and the writer is woken once per group
    at most: by the loop, after the round of callbacks that submitted (`_wake_from`).
    """

    def __init__(
        self,
        *,
        commit_group: Callable[[Sequence[PendingAppend]], list[list[AppendResult]]],
        max_group_events: int,
    ) -> None:
        self._commit_group = commit_group
        self._max_group_events = max_group_events
        self._queue: deque[PendingAppend] = deque()
        self._submitting = threading.Lock()  # among submitters only (several loops may append)
        self._submitted_events = 0  # written by submitters, under `_submitting`
        self._submitted_bytes = 0
        self._taken_events = 0  # written by the writer thread only
        self._taken_bytes = 0
        # A wake-up pending: `_wake` unlocked. The writer waits by acquiring it (and so takes
        # the wake-up); a waker releases it if held, under `_submitting`. A bare lock, not a
        # `threading.Event`, whose `set` costs a Condition's Python (a few µs of the loop
        # thread) for the same futex wake.
        self._wake = threading.Lock()
        self._wake.acquire()
        self._idle = False  # the writer is (about to be) waiting for `_wake`
        # Loops with a wake-up of the writer scheduled for the end of their current round.
        self._waking: set[asyncio.AbstractEventLoop] = set()
        self._started = False
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="eventlog-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._started = True

    def stop(self) -> None:
        """Finish what is queued, then end the thread; blocks until it has ended."""
        self._stopping = True
        with self._submitting:
            self._set_wake()
        self._thread.join()

    @property
    def accepting(self) -> bool:
        # The thread sets `_stopping` itself on its way out, whatever ends it.
        return self._started and not self._stopping

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def queued_events(self) -> int:
        return self._submitted_events - self._taken_events

    def submit(
        self, pending: PendingAppend, *, max_events: int, max_bytes: int, max_delay: float
    ) -> str | None:
        """Queue an append, or return why not (the queue is over a bound)."""
        events = len(pending.batch)
        queue = self._queue
        with self._submitting:
            if self._stopping:
                raise LogClosed("the event log is closing")
            if queue:
                queued_events = self._submitted_events - self._taken_events
                if queued_events + events > max_events:
                    return f"{queued_events} events are waiting to be written"
                queued_bytes = self._submitted_bytes - self._taken_bytes
                if queued_bytes + pending.size > max_bytes:
                    return f"{queued_bytes} bytes are waiting to be written"
                try:
                    oldest = queue[0]
                except IndexError:  # the writer took them meanwhile
                    pass
                else:
                    waited = pending.enqueued - oldest.enqueued
                    if waited > max_delay:
                        return f"the oldest waiting append has waited {waited:.2f} s"
            self._submitted_events += events
            self._submitted_bytes += pending.size
            queue.append(pending)
            if self._idle and pending.loop not in self._waking:
                # Woken once the loop has run what is ready now: the writer then takes every
                # append of this round in one group, rather than the first alone while the
                # rest wait for the next, and it does not ask for the GIL while the loop
                # still has callbacks to run.
                self._waking.add(pending.loop)
                pending.loop.call_soon(self._wake_from, pending.loop)
        return None

    def _wake_from(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._submitting:
            self._waking.discard(loop)
            self._set_wake()

    def _set_wake(self) -> None:
        """Leave a wake-up for the writer (at most one pending). Under `_submitting`: only
        the writer acquires `_wake` besides, so a held lock stays held until released here."""
        if self._wake.locked():
            self._wake.release()

    def _take(self) -> list[PendingAppend] | None:
        """The next group; None: stop."""
        queue = self._queue
        while not queue:
            if self._stopping:
                return None
            # Idle first, then look again: a submit that came before this look is seen, one
            # that comes after it sees `_idle` and leaves a wake-up. A wake-up left before
            # (for a group taken meanwhile) only makes this wait return at once.
            self._idle = True
            if not queue and not self._stopping:
                self._wake.acquire()
            self._idle = False
        group: list[PendingAppend] = []
        events = size = 0
        while queue:
            item = queue[0]
            if group and events + len(item.batch) > self._max_group_events:
                break
            queue.popleft()
            group.append(item)
            events += len(item.batch)
            size += item.size
        self._taken_events += events
        self._taken_bytes += size
        return group

    def _run(self) -> None:
        try:
            while (group := self._take()) is not None:
                self._execute_group(group)
        finally:
            self._stopping = True
            left: list[PendingAppend] = []
            with self._submitting:  # no submit is between its check and its append now
                while self._queue:
                    left.append(self._queue.popleft())
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


def announce_planned(
    group: Sequence[PendingAppend], split: Sequence[Sequence[AppendResult]], recorded: bytes
) -> None:
    """Tell the appends that asked (`PendingAppend.announce`) their results and recorded time,
    one `call_soon_threadsafe` per loop: queued before their completion, so told before it."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Announce, Sequence[AppendResult]]]] = {}
    for pending, results in zip(group, split, strict=True):
        if pending.announce is not None:
            by_loop.setdefault(pending.loop, []).append((pending.announce, results))
    for loop, told in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits there
            loop.call_soon_threadsafe(_tell, told, recorded)


def _tell(told: list[tuple[Announce, Sequence[AppendResult]]], recorded: bytes) -> None:
    for announce, results in told:
        announce(results, recorded)


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

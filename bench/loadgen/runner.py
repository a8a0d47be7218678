"""Driving a server: closed loop (as fast as answers come) or open loop (a fixed request rate).

Closed loop: each connection sends its next request as soon as the previous answer is in; latency
is from sending to the end of the answer. Open loop (`rate`): requests fall due at fixed intervals
whatever the server does; a due request takes the next free connection, and its latency counts
from the moment it was due, so time spent waiting for a connection is not hidden (no coordinated
omission). Stuck requests are cut off after `timeout` by a watchdog that closes their connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from typing import Final

import msgspec

from loadgen.connection import ConnectionClosed, HttpConnection, ProtocolError
from loadgen.requests import Mode, RequestFactory, Target, new_run_id
from loadgen.result import ACCEPTED, LoadResult, accepted_count

_RECONNECT_PAUSE: Final = 0.05  # after a failed connect, so a dead server is not spun on
_WATCHDOG_INTERVAL: Final = 0.25


class LoadSpec(msgspec.Struct, frozen=True):
    """One run: what to send, how much, how fast. The run ends at `duration` seconds or after
    `requests` requests, whichever comes first (at least one of them must be set)."""

    target: Target
    mode: Mode = Mode.SINGLE
    batch_size: int = 100
    data_bytes: int = 512
    concurrency: int = 32
    duration: float | None = 10.0
    requests: int | None = None
    rate: float | None = None
    processes: int = 1
    warmup: float = 0.0
    timeout: float = 30.0
    run: str = msgspec.field(default_factory=new_run_id)

    def __post_init__(self) -> None:
        if self.duration is None and self.requests is None:
            raise ValueError("give a duration, a request count, or both")
        if self.concurrency < 1 or self.processes < 1 or self.concurrency < self.processes:
            raise ValueError("need at least one connection per process")
        if self.rate is not None and self.rate <= 0:
            raise ValueError("rate must be positive")

    def share(self, worker: int) -> LoadSpec:
        """The part of the load that worker process `worker` carries."""

        def split(total: int) -> int:
            return total // self.processes + (1 if worker < total % self.processes else 0)

        return msgspec.structs.replace(
            self,
            concurrency=split(self.concurrency),
            requests=None if self.requests is None else split(self.requests),
            rate=None if self.rate is None else self.rate / self.processes,
            processes=1,
        )


class _Slot:
    """A connection and what it is doing."""

    __slots__ = ("connection", "since")

    def __init__(self, connection: HttpConnection | None) -> None:
        self.connection = connection
        self.since = 0  # monotonic ns when its current request was due/sent; 0 when idle


class Worker:
    """Runs one process's share of a `LoadSpec` on the running event loop."""

    def __init__(self, spec: LoadSpec, worker: int = 0) -> None:
        self.spec = spec
        self.factory = RequestFactory(
            spec.target,
            spec.mode,
            batch_size=spec.batch_size,
            data_bytes=spec.data_bytes,
            run=spec.run,
            worker=worker,
        )
        self.result = LoadResult()
        self._remaining = spec.requests if spec.requests is not None else -1
        self._slots = [_Slot(None) for _ in range(spec.concurrency)]
        self._start = 0
        self._measure_from = 0
        self._deadline: int | None = None
        self._last_end = 0
        self._timeouts: set[HttpConnection] = set()

    async def connect(self) -> None:
        """Open the connections before the run starts (not counted)."""
        target = self.spec.target
        connections = await asyncio.gather(
            *(HttpConnection.open(target.host, target.port) for _ in self._slots)
        )
        for slot, connection in zip(self._slots, connections, strict=True):
            slot.connection = connection

    async def run(self, start_at: float | None = None) -> LoadResult:
        """Drive the load, starting at monotonic time `start_at` (now if None)."""
        if any(slot.connection is None for slot in self._slots):
            await self.connect()
        if start_at is not None:
            await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        self._start = time.monotonic_ns()
        self._measure_from = self._start + int(self.spec.warmup * 1e9)
        self._last_end = self._measure_from
        if self.spec.duration is not None:
            self._deadline = self._measure_from + int(self.spec.duration * 1e9)
        watchdog = asyncio.create_task(self._watchdog())
        try:
            if self.spec.rate is None:
                await asyncio.gather(*(self._closed_loop(slot) for slot in self._slots))
            else:
                await self._open_loop(self.spec.rate)
        finally:
            watchdog.cancel()
            for slot in self._slots:
                if slot.connection is not None:
                    slot.connection.close()
        self.result.elapsed = max(0.0, (self._last_end - self._measure_from) / 1e9)
        return self.result

    # -- shared bookkeeping --------------------------------------------------------------------

    def _may_send(self, now: int) -> bool:
        if self._deadline is not None and now >= self._deadline:
            return False
        if self._remaining == 0:
            return False
        if self._remaining > 0:
            self._remaining -= 1
        return True

    def _settle(self, slot: _Slot, due: int, answer: asyncio.Future[tuple[int, bytes]]) -> None:
        """Count one finished request (answered or not)."""
        end = time.monotonic_ns()
        slot.since = 0
        warmup = due < self._measure_from
        if not warmup:
            self._last_end = max(self._last_end, end)
        error = answer.exception()
        if error is not None:
            connection = slot.connection
            timed_out = connection is not None and connection in self._timeouts
            kind = "timeout" if timed_out else _error_kind(error)
            self.result.count_error(kind, warmup=warmup)
            slot.connection = None
            if connection is not None:
                self._timeouts.discard(connection)
                connection.close()
            return
        status, body = answer.result()
        self.result.count_answer(status, body, warmup=warmup)
        if status != ACCEPTED:
            return
        expected = self.factory.events_per_request
        accepted = accepted_count(body)
        if accepted is None or accepted > expected:
            accepted = expected
        if warmup:
            self.result.warmup_events_acknowledged += accepted
            return
        self.result.latency.record(end - due)
        self.result.events_acknowledged += accepted
        self.result.events_not_accepted += expected - accepted

    async def _reconnect(self, slot: _Slot) -> bool:
        target = self.spec.target
        try:
            slot.connection = await HttpConnection.open(target.host, target.port)
        except OSError as exc:
            self.result.count_error(f"connect: {_error_kind(exc)}", warmup=False)
            await asyncio.sleep(_RECONNECT_PAUSE)
            return False
        return True

    async def _watchdog(self) -> None:
        limit = int(self.spec.timeout * 1e9)
        while True:
            await asyncio.sleep(_WATCHDOG_INTERVAL)
            now = time.monotonic_ns()
            for slot in self._slots:
                connection = slot.connection
                if slot.since and connection is not None and now - slot.since > limit:
                    self._timeouts.add(connection)
                    connection.close()

    # -- closed loop ---------------------------------------------------------------------------

    async def _closed_loop(self, slot: _Slot) -> None:
        factory = self.factory
        while True:
            connection = slot.connection
            if connection is None or not connection.usable:
                if connection is not None:
                    connection.close()
                if self._deadline is not None and time.monotonic_ns() >= self._deadline:
                    return
                if not await self._reconnect(slot):
                    continue
                connection = slot.connection
                assert connection is not None
            data = factory.next_request()
            sent = time.monotonic_ns()
            if not self._may_send(sent):
                return
            slot.since = sent
            answer = connection.request(data)
            with contextlib.suppress(ConnectionClosed, ProtocolError, OSError):
                await answer  # a failure is counted in _settle
            self._settle(slot, sent, answer)

    # -- open loop -----------------------------------------------------------------------------

    async def _open_loop(self, rate: float) -> None:
        interval = 1e9 / rate
        idle: deque[_Slot] = deque(self._slots)
        backlog: deque[int] = deque()
        pending: set[asyncio.Future[tuple[int, bytes]]] = set()
        reconnecting: set[asyncio.Task[None]] = set()
        sequence = 0

        def dispatch() -> None:
            while backlog and idle:
                slot = idle.popleft()
                connection = slot.connection
                if connection is None or not connection.usable:
                    task = asyncio.create_task(revive(slot))
                    reconnecting.add(task)
                    task.add_done_callback(reconnecting.discard)
                    continue
                due = backlog.popleft()
                slot.since = due
                answer = connection.request(self.factory.next_request())
                pending.add(answer)
                answer.add_done_callback(finished(slot, due))

        def finished(slot: _Slot, due: int) -> Callable[[asyncio.Future[tuple[int, bytes]]], None]:
            def done(answer: asyncio.Future[tuple[int, bytes]]) -> None:
                pending.discard(answer)
                self._settle(slot, due, answer)
                idle.append(slot)
                dispatch()

            return done

        async def revive(slot: _Slot) -> None:
            if slot.connection is not None:
                slot.connection.close()
            while not await self._reconnect(slot):
                if self._deadline is not None and time.monotonic_ns() >= self._deadline:
                    return
            idle.append(slot)
            dispatch()

        while True:
            due = self._start + int(sequence * interval)
            if not self._may_send(due):
                break
            now = time.monotonic_ns()
            if due > now:
                await asyncio.sleep((due - now) / 1e9)
            backlog.append(due)
            sequence += 1
            dispatch()
        self.result.unsent += len(backlog)
        backlog.clear()
        if pending:
            await asyncio.wait(pending)
        for task in list(reconnecting):
            task.cancel()


def _error_kind(error: BaseException) -> str:
    if isinstance(error, ConnectionClosed):
        return "connection closed"
    if isinstance(error, ProtocolError):
        return "protocol error"
    return type(error).__name__

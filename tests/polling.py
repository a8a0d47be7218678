"""Waiting in tests: ask a probe until its answer will do, with a deadline, never a bare sleep.

`eventually` (in a coroutine) and `wait_until` (in a thread) return the first answer that
`accept` takes (by default a truthy one). Past the deadline they fail naming what was awaited:
`what` when given, else the probe's own source line, and the last answer or error seen.
"""

from __future__ import annotations

import asyncio
import inspect
import linecache
import socketserver
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")

DEADLINE = 30.0
# How often a test's server thread looks whether it was told to stop: its `shutdown()` waits for
# that look, 0.5 s by default (half a second of every test that stopped a receiver).
SERVER_POLL_SECONDS = 0.02


Errors = type[BaseException] | tuple[type[BaseException], ...]


@overload
async def eventually(
    probe: Callable[[], Awaitable[T]],
    *,
    what: str | None = None,
    within: float = DEADLINE,
    every: float = 0.02,
    accept: Callable[[T], object] = bool,
    ignoring: Errors = (),
) -> T: ...


@overload
async def eventually(
    probe: Callable[[], T],
    *,
    what: str | None = None,
    within: float = DEADLINE,
    every: float = 0.02,
    accept: Callable[[T], object] = bool,
    ignoring: Errors = (),
) -> T: ...


async def eventually(
    probe: Callable[[], Any],
    *,
    what: str | None = None,
    within: float = DEADLINE,
    every: float = 0.02,
    accept: Callable[[Any], object] = bool,
    ignoring: Errors = (),
) -> Any:
    """The first answer of `probe()` (a function or a coroutine function) that `accept` takes.

    An error of a type in `ignoring` counts as "not yet" (a server coming back, say).
    """
    deadline = time.monotonic() + within
    last: object = None
    while True:
        try:
            answer: Any = probe()
            if inspect.isawaitable(answer):
                answer = await answer
        except ignoring as exc:
            last = exc
        else:
            if accept(answer):
                return answer
            last = answer
        if time.monotonic() >= deadline:
            raise AssertionError(_late(probe, what, within, last))
        await asyncio.sleep(every)


def wait_until(
    probe: Callable[[], T],
    *,
    what: str | None = None,
    within: float = DEADLINE,
    every: float = 0.05,
    accept: Callable[[T], object] = bool,
    ignoring: Errors = (),
) -> T:
    """The first answer of `probe()` that `accept` takes, asked from a thread that may block."""
    deadline = time.monotonic() + within
    last: object = None
    while True:
        try:
            answer = probe()
        except ignoring as exc:
            last = exc
        else:
            if accept(answer):
                return answer
            last = answer
        if time.monotonic() >= deadline:
            raise AssertionError(_late(probe, what, within, last))
        time.sleep(every)


def _late(probe: Callable[..., object], what: str | None, within: float, last: object) -> str:
    return f"not within {within} s: {what or _described(probe)} (last: {last!r:.500})"


def _described(probe: Callable[..., object]) -> str:
    """Where the probe was written, and the line that says what it asks."""
    code = getattr(probe, "__code__", None)
    if code is None:
        return repr(probe)
    line = linecache.getline(code.co_filename, code.co_firstlineno).strip()
    return f"{line} ({code.co_filename}:{code.co_firstlineno})"


def serve_in_thread(server: socketserver.BaseServer) -> threading.Thread:
    """Serve in a daemon thread, so that `server.shutdown()` returns within a poll."""
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": SERVER_POLL_SECONDS}, daemon=True
    )
    thread.start()
    return thread

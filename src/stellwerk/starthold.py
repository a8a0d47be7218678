"""A start held at one point for a test: what happens when a change is made while a process starts
must not depend on how fast the process starts (docs/testing.md, "A start held for a test").

`STELLWERK_START_HOLD=ROLE:FIFO` holds the process of that role after it has first read the rules
and before it listens for changes, until a line is written to the FIFO. Unset, nothing waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Final

import structlog

START_HOLD_ENV: Final = "STELLWERK_START_HOLD"

log = structlog.stdlib.get_logger(__name__)


async def hold_start(role: str) -> None:
    """If the environment holds `role`'s start: say so ("start held"), then wait for a line on
    the FIFO it names. Cancellable, so that a stop while held is not kept waiting."""
    held, _, fifo = os.environ.get(START_HOLD_ENV, "").partition(":")
    if held != role or not fifo:
        return
    # Read and write: the open does not wait for a writer, and the test's open for writing does
    # not wait either, since this end reads.
    fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    loop = asyncio.get_running_loop()
    released = loop.create_future()

    def readable() -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(fd, 4096)
        if not released.done():
            released.set_result(None)

    loop.add_reader(fd, readable)
    try:
        log.info("start held", role=role, fifo=fifo)
        await released
        log.info("start released", role=role)
    finally:
        loop.remove_reader(fd)
        os.close(fd)

"""A target's concurrency slots: an `asyncio.Semaphore` without its per-call overhead.

Taking a free slot is a decrement, giving one back an increment or a hand-over to the longest
waiter; asyncio's semaphore looks through its waiters on every acquire, which a target pays for
on every delivery.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Slots:
    """`take()` a slot (waiting in order while none is free), `give()` it back."""

    __slots__ = ("free", "waiters")

    def __init__(self, count: int) -> None:
        self.free = count
        self.waiters: deque[asyncio.Future[None]] = deque()

    async def take(self) -> None:
        if self.free > 0 and not self.waiters:
            self.free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.give()  # handed a slot just as the wait was cancelled: pass it on
            elif waiter in self.waiters:  # `give` may have dropped it already
                self.waiters.remove(waiter)
            raise

    def give(self) -> None:
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot goes to the waiter, never through `free`
                return
        self.free += 1

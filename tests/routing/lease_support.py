"""Helpers for the lease tests: waiting on a condition, and a holder that dies."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Final, TypeVar

from stellwerk.storage.leases import JetStreamLeases

DEADLINE: Final = 30.0
T = TypeVar("T")


async def eventually(probe: Callable[[], T], within: float = DEADLINE) -> T:
    """`probe()`'s first truthy answer, asked every 20 ms until `within` seconds have passed."""
    deadline = time.monotonic() + within
    while not (answer := probe()):
        assert time.monotonic() < deadline, "the condition did not come true in time"
        await asyncio.sleep(0.02)
    return answer


async def crash(leases: JetStreamLeases) -> None:
    """Die without releasing anything: the keeper stops, the connection drops. The leases it
    holds still answer `holds` until their time runs out, as a stalled process's would."""
    keeper, leases._keeper = leases._keeper, None
    assert keeper is not None
    keeper.cancel()
    await asyncio.wait([keeper])
    conn, leases._conn = leases._conn, None
    assert conn is not None
    await conn.close()

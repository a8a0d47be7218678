"""The scheduler's depth report outlives a failed read (compose.report_depth)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from stellwerk.compose import report_depth
from stellwerk.refs import TenantName
from stellwerk.seams import QueueDepth, TargetKey


async def test_a_failed_read_of_the_depth_is_tried_again_and_reported() -> None:
    key = TargetKey(TenantName("acme"), "default", "r", "hook")
    depth = QueueDepth(key=key, pending=7, in_flight=0, dead=0, oldest_pending_seconds=None)
    reads = 0
    reported: list[Sequence[QueueDepth]] = []
    done = asyncio.Event()

    async def read() -> Sequence[QueueDepth]:
        nonlocal reads
        reads += 1
        if reads == 1:
            raise TimeoutError("the queue is not open yet")
        return [depth]

    def report(depths: Sequence[QueueDepth]) -> None:
        reported.append(depths)
        done.set()

    task = asyncio.create_task(report_depth(read, report, 0.001))
    try:
        await asyncio.wait_for(done.wait(), 10)
    finally:
        task.cancel()
    assert reads >= 2
    assert reported[0] == [depth]

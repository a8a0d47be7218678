"""The embedded log's file stays bounded when retention trims it: freed pages are used again."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from pathlib import Path

from tests.storage.eventlog_support import MovableClock, new_event

from stellwerk.storage.eventlog.sqlite import SqliteEventLog
from stellwerk.storage.sqlite import EVENTS_FILE

EVENTS_PER_ROUND = 20_000
BATCH = 500


async def _fill_and_trim(path: Path, clock: MovableClock, round_no: int) -> int:
    """Append a round of ~1 KB events, let them age, trim them all; the file size after."""
    log = SqliteEventLog(path, clock=clock, dedup_window=timedelta(hours=1))
    async with log:
        for start in range(0, EVENTS_PER_ROUND, BATCH):
            await log.append(
                [
                    new_event(f"r{round_no}-{i}", data={"pad": "x" * 1000, "i": i})
                    for i in range(start, start + BATCH)
                ]
            )
        clock.advance(timedelta(days=1))
        assert await log.trim(clock.now) == EVENTS_PER_ROUND
        assert await log.read("acme", "default") == []
    return await asyncio.to_thread(os.path.getsize, path)


async def test_the_file_does_not_grow_when_each_round_is_trimmed(
    tmp_path: Path, clock: MovableClock
) -> None:
    path = tmp_path / EVENTS_FILE
    first = await _fill_and_trim(path, clock, 1)
    sizes = [await _fill_and_trim(path, clock, n) for n in (2, 3)]

    # Three rounds of ~20 MB each: without page reuse the file would triple.
    assert first > EVENTS_PER_ROUND * 1000
    assert max(sizes) <= first * 1.2, (first, sizes)

"""The embedded log's directory stays bounded when retention trims it: whole files go."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from pathlib import Path

from tests.storage.eventlog_support import ACME_DEFAULT, MovableClock, new_event

from stellwerk.storage.eventlog.sqlite import SqliteEventLog
from stellwerk.storage.sqlite import LOG_DIR

EVENTS_PER_ROUND = 20_000
BATCH = 500


def _size(path: Path) -> int:
    return sum(os.path.getsize(f) for f in path.iterdir() if f.is_file())


async def _fill_and_trim(path: Path, clock: MovableClock, round_no: int) -> tuple[int, int]:
    """Append a round of ~1 KB events, let them age, trim them all; the directory's size before
    and after the trim."""
    log = SqliteEventLog(
        path, clock=clock, dedup_window=timedelta(hours=1), max_file_bytes=2 * 1024 * 1024
    )
    async with log:
        for start in range(0, EVENTS_PER_ROUND, BATCH):
            await log.append(
                [
                    new_event(f"r{round_no}-{i}", data={"pad": "x" * 1000, "i": i})
                    for i in range(start, start + BATCH)
                ]
            )
        full = await asyncio.to_thread(_size, path)
        clock.advance(timedelta(days=1))
        assert await log.trim(clock.now) == EVENTS_PER_ROUND
        assert await log.read(ACME_DEFAULT) == []
    return full, await asyncio.to_thread(_size, path)


async def test_the_directory_does_not_grow_when_each_round_is_trimmed(
    tmp_path: Path, clock: MovableClock
) -> None:
    path = tmp_path / LOG_DIR
    rounds = [await _fill_and_trim(path, clock, n) for n in (1, 2, 3)]

    # Three rounds of ~20 MB each; after each trim only the file being appended to is left.
    assert all(full > EVENTS_PER_ROUND * 1000 for full, _ in rounds)
    assert all(trimmed < 4 * 1024 * 1024 for _, trimmed in rounds), rounds
    assert max(full for full, _ in rounds) <= rounds[0][0] * 1.2, rounds

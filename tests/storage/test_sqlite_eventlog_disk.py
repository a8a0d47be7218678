"""The embedded log on a disk that fills up or turns read-only, on real small file systems.

A refused append stores nothing (its chunk is cut off the file again), every acknowledged event
stays, and once there is room again appends go on in the same process, with the index caught up.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from tests.disks import ext4, tmpfs
from tests.polling import eventually
from tests.storage.eventlog_support import ACME_DEFAULT, new_event

from stellwerk.seams import AppendStatus, LogUnavailable, NewEvent
from stellwerk.storage.eventlog.sqlite import SqliteEventLog
from stellwerk.storage.sqlite import LOG_DIR

pytestmark = pytest.mark.slow

PADDING = "x" * 900  # events of about a kilobyte: a few of them fill the last free page


def event(n: int) -> NewEvent:
    return new_event(f"e{n}", data={"n": n, "padding": PADDING})


def open_log(data_dir: Path) -> SqliteEventLog:
    return SqliteEventLog(data_dir / LOG_DIR, index_interval=0.01, checkpoint_interval=0.05)


async def append_until_refused(
    log: SqliteEventLog, first: int, acknowledged: set[str]
) -> tuple[LogUnavailable, int]:
    """Append events one by one (and some at once) until the log refuses one; every id it
    acknowledges goes into `acknowledged`. Returns the refusal and the next event number."""
    n = first
    while n < first + 2000:
        batch = [event(n + i) for i in range(4)]
        n += len(batch)
        outcomes = await asyncio.gather(*(log.append([e]) for e in batch), return_exceptions=True)
        refusal = None
        for sent, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, LogUnavailable):
                refusal = outcome
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                assert outcome[0].status is AppendStatus.STORED
                acknowledged.add(sent.id)
        if refusal is not None:
            return refusal, n
    raise AssertionError("the log never refused an append on a full disk")


async def stored_ids(log: SqliteEventLog) -> list[str]:
    found: list[str] = []
    after = 0
    while batch := await log.read(ACME_DEFAULT, after=after, limit=1000):
        found += [e.id for e in batch]
        after = batch[-1].position
    return found


async def append_once_room(log: SqliteEventLog, e: NewEvent) -> None:
    """Appends work again within a deadline (the index is tried again at its own pace)."""
    [outcome] = await eventually(
        lambda: log.append([e]), what="appends work again", ignoring=LogUnavailable
    )
    assert outcome.status is AppendStatus.STORED


async def ready_within(log: SqliteEventLog) -> None:
    await eventually(
        log.ping, what="the log is ready again", accept=lambda _: True, ignoring=LogUnavailable
    )


def indexed_end(data_dir: Path) -> tuple[int, int]:
    conn = sqlite3.connect(data_dir / LOG_DIR / "index.db")
    try:
        rows = dict(conn.execute("SELECT name, value FROM state"))
    finally:
        conn.close()
    return rows["indexed_file"], rows["indexed_end"]


async def test_a_full_disk_refuses_appends_keeps_what_was_acknowledged_and_recovers(
    tmp_path: Path,
) -> None:
    with tmpfs(tmp_path / "disk", size="4m") as disk:
        acknowledged: set[str] = set()
        log = open_log(disk.path)
        await log.start()
        try:
            for n in range(20):
                await log.append([event(n)])
                acknowledged.add(f"e{n}")
            disk.fill()
            refusal, n = await append_until_refused(log, 100, acknowledged)
            assert refusal.code == "DataDirectoryFull"
            assert str(refusal) == "the data directory is full"
            assert refusal.retry_after >= 1
            with pytest.raises(LogUnavailable, match="the data directory is full"):
                await log.ping()
            # What was acknowledged reads back, and nothing that was refused.
            assert sorted(await stored_ids(log)) == sorted(acknowledged)

            disk.free()
            await append_once_room(log, event(n))
            acknowledged.add(f"e{n}")
            await ready_within(log)
            [again] = await log.append([event(0)])
            assert again.status is AppendStatus.DUPLICATE
            assert sorted(await stored_ids(log)) == sorted(acknowledged)
            # The index catches up with the files while the log runs.
            assert log._head is not None
            head = log._head.load()
            await eventually(lambda: indexed_end(disk.path) == head, what="the index catches up")
        finally:
            await log.close()
        # A restart finds exactly the same events.
        log = open_log(disk.path)
        async with log:
            assert sorted(await stored_ids(log)) == sorted(acknowledged)
            [again] = await log.append([event(1)])
            assert again.status is AppendStatus.DUPLICATE


async def test_a_disk_that_turns_read_only_refuses_appends_and_keeps_what_was_acknowledged(
    tmp_path: Path,
) -> None:
    with ext4(tmp_path / "disk") as disk:
        acknowledged: set[str] = set()
        log = open_log(disk.path)
        await log.start()
        try:
            for n in range(50):
                await log.append([event(n)])
                acknowledged.add(f"e{n}")
            disk.turn_read_only()
            with pytest.raises(LogUnavailable) as refused:
                await log.append([event(1000)])
            assert refused.value.code == "DataDirectoryReadOnly"
            assert str(refused.value) == "the data directory is read-only"
            with pytest.raises(LogUnavailable, match="read-only"):
                await log.ping()
            assert sorted(await stored_ids(log)) == sorted(acknowledged)
        finally:
            await log.close()

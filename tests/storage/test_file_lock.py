"""One process at a time on a data directory: the lock files, and the event log's writer lock."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import structlog
from tests.polling import eventually
from tests.storage.eventlog_support import ACME_DEFAULT, new_event

from stellwerk.storage.eventlog.sqlite import SqliteEventLog
from stellwerk.storage.sqlite import LOG_DIR, PIPELINE_LOCK, RUN_DIR, WRITER_LOCK, FileLock


def test_a_held_lock_is_refused_to_another_holder_until_released(tmp_path: Path) -> None:
    first, second = FileLock(tmp_path / PIPELINE_LOCK), FileLock(tmp_path / PIPELINE_LOCK)
    assert first.try_acquire()
    assert first.held
    assert not second.try_acquire()
    assert second.holder() == os.getpid()
    first.release()
    assert second.try_acquire()
    second.release()


async def test_acquire_waits_says_so_once_and_goes_on_when_the_holder_lets_go(
    tmp_path: Path,
) -> None:
    holder, waiter = FileLock(tmp_path / "x.lock"), FileLock(tmp_path / "x.lock")
    assert holder.try_acquire()
    told: list[int | None] = []

    def waiting(pid: int | None) -> None:
        told.append(pid)

    task = asyncio.create_task(waiter.acquire(waiting=waiting))
    await eventually(lambda: told)
    assert not task.done()
    holder.release()
    await asyncio.wait_for(task, timeout=10)
    assert waiter.held
    assert told == [os.getpid()]
    waiter.release()


HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from stellwerk.storage.sqlite import FileLock
    lock = FileLock(Path(sys.argv[1]))
    assert lock.try_acquire()
    print("held", flush=True)
    time.sleep(600)
    """
)


@pytest.mark.slow
def test_the_lock_of_a_process_killed_with_sigkill_is_free_at_once(tmp_path: Path) -> None:
    path = tmp_path / PIPELINE_LOCK
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "held"
        lock = FileLock(path)
        assert not lock.try_acquire()
        assert lock.holder() == child.pid
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        assert lock.try_acquire()
        lock.release()
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()


async def test_a_second_log_writer_on_a_directory_waits_for_the_first(tmp_path: Path) -> None:
    first = SqliteEventLog(tmp_path / LOG_DIR)
    await first.start()
    await first.append([new_event("e1")])
    second = SqliteEventLog(tmp_path / LOG_DIR)
    with structlog.testing.capture_logs() as lines:
        starting = asyncio.create_task(second.start())
        await eventually(lambda: lines)
        assert not starting.done()
        await first.append([new_event("e2")])  # the first still appends meanwhile
        await first.close()
        await asyncio.wait_for(starting, timeout=30)
    try:
        assert [line["event"].split(":")[0] for line in lines] == ["waiting for the event log"]
        assert lines[0]["lock"] == str(tmp_path / RUN_DIR / WRITER_LOCK)
        assert lines[0]["holder_pid"] == os.getpid()
        await second.append([new_event("e3")])
        stored = await second.read(ACME_DEFAULT)
        assert [event.id for event in stored] == ["e1", "e2", "e3"]
        assert len({event.position for event in stored}) == 3
    finally:
        await second.close()


async def test_a_reading_log_takes_no_writer_lock(tmp_path: Path) -> None:
    async with SqliteEventLog(tmp_path / LOG_DIR) as writer:
        await writer.append([new_event("e1")])
        async with SqliteEventLog(tmp_path / LOG_DIR, appends=False) as reader:
            assert [e.id for e in await reader.read(ACME_DEFAULT)] == ["e1"]

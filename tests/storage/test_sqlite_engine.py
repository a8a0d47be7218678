"""The SQLite engine: group commit with a SAVEPOINT per job, per-job durability, backpressure,
writes nobody waits for, and noticing another connection's commits."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from tests.polling import eventually
from tests.storage.engine_support import commits, handle_of, held, statements, until_waiting

from stellwerk.storage.sqlite import Engine


class Closed(Exception):
    pass


class Failed(Exception):
    pass


def _setup(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA foreign_keys = ON")  # lets a test make a COMMIT fail
    conn.execute("CREATE TABLE IF NOT EXISTS t (n INTEGER PRIMARY KEY)")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS child"
        " (n INTEGER REFERENCES t (n) DEFERRABLE INITIALLY DEFERRED)"
    )


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    opened = Engine(tmp_path / "e.db", setup=[_setup], later_seconds=0.05)
    await opened.acquire()
    yield opened
    await opened.release()


def _insert(n: int) -> Callable[[sqlite3.Connection], object]:
    return lambda conn: conn.execute("INSERT INTO t (n) VALUES (?)", (n,))


def _rows(path: Path) -> list[int]:
    with sqlite3.connect(path) as conn:
        return [n for (n,) in conn.execute("SELECT n FROM t ORDER BY n")]


async def test_waiting_jobs_share_one_commit_and_a_failing_one_rolls_back_alone(
    engine: Engine,
) -> None:
    handle = engine.handle("the test store", closed=Closed, failed=Failed)

    def clash(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t (n) VALUES (100)")
        conn.execute("INSERT INTO t (n) VALUES (1)")  # taken by the first job of the group

    with statements(engine) as seen:
        async with held(engine):
            jobs = [asyncio.ensure_future(handle.write(_insert(n), synced=False)) for n in (1, 2)]
            jobs.insert(1, asyncio.ensure_future(handle.write(clash, synced=False)))
            await until_waiting(engine, 3)
        outcomes = await asyncio.gather(*jobs, return_exceptions=True)

    assert isinstance(outcomes[1], sqlite3.IntegrityError)
    assert not any(isinstance(outcome, BaseException) for outcome in outcomes[::2])
    assert len(commits(seen)) == 1
    assert _rows(engine.path) == [1, 2]  # not 100: the failing job's first insert went too


async def test_a_failed_commit_fails_every_job_of_the_group_with_its_stores_error(
    engine: Engine,
) -> None:
    mine = engine.handle("the test store", closed=Closed, failed=Failed)
    rolled_back: list[str] = []
    other = engine.handle(
        "another store", closed=Closed, failed=RuntimeError,
        on_rollback=lambda: rolled_back.append("other"),
    )  # fmt: skip
    async with held(engine):
        orphan = asyncio.ensure_future(
            mine.write(lambda conn: conn.execute("INSERT INTO child VALUES (7)"), synced=False)
        )
        bystander = asyncio.ensure_future(other.write(_insert(1), synced=False))
        await until_waiting(engine, 2)

    with pytest.raises(Failed, match="the test store could not commit: FOREIGN KEY") as failed:
        await orphan
    assert isinstance(failed.value.__cause__, sqlite3.IntegrityError)
    with pytest.raises(RuntimeError, match="another store could not commit"):
        await bystander
    assert rolled_back == ["other"]
    assert _rows(engine.path) == []


async def test_a_group_is_synced_only_when_one_of_its_jobs_asks(engine: Engine) -> None:
    handle = handle_of(engine)
    with statements(engine) as seen:
        await handle.write(_insert(1), synced=False)
        await handle.write(_insert(2), synced=True)
        await handle.write(_insert(3), synced=False)
        async with held(engine):
            together = [
                asyncio.ensure_future(handle.write(_insert(4), synced=False)),
                asyncio.ensure_future(handle.write(_insert(5), synced=True)),
            ]
            await until_waiting(engine, 2)
        await asyncio.gather(*together)

    assert [mode for mode, _ in commits(seen)] == ["NORMAL", "FULL", "NORMAL", "FULL"]


async def test_a_synced_read_makes_earlier_unsynced_commits_durable(engine: Engine) -> None:
    handle = handle_of(engine)
    count = lambda conn: conn.execute("SELECT count(*) FROM t").fetchone()[0]  # noqa: E731
    await handle.write(_insert(1), synced=True)
    assert await handle.inside(count, synced=True) == 1
    assert engine.syncs == 0  # nothing was waiting for the disk

    await handle.write(_insert(2), synced=False)
    assert await handle.inside(count) == 2
    assert engine.syncs == 0
    assert await handle.inside(count, synced=True) == 2
    assert engine.syncs == 1
    assert await handle.inside(count, synced=True) == 2
    assert engine.syncs == 1


async def test_submitters_wait_while_the_queue_is_full(tmp_path: Path) -> None:
    engine = Engine(tmp_path / "e.db", setup=[_setup], max_waiting=2)
    await engine.acquire()
    try:
        handle = handle_of(engine)
        async with held(engine):
            writes = [
                asyncio.ensure_future(handle.write(_insert(n), synced=False)) for n in range(5)
            ]
            await until_waiting(engine, 2)
            await asyncio.sleep(0)  # the others get a turn: they find no room
            assert engine.waiting == 2
        await asyncio.gather(*writes)
        assert _rows(engine.path) == [0, 1, 2, 3, 4]
    finally:
        await engine.release()


async def test_a_write_nobody_waits_for_goes_with_the_next_group_or_by_itself(
    engine: Engine,
) -> None:
    handle = handle_of(engine)
    with statements(engine) as seen:
        async with held(engine):
            handle.later(_insert(1))
            now = asyncio.ensure_future(handle.write(_insert(2), synced=False))
            await until_waiting(engine, 1)
        await now
        inserts = [[s for s in body if s.startswith("INSERT")] for _, body in commits(seen)]
        assert inserts == [["INSERT INTO t (n) VALUES (2)", "INSERT INTO t (n) VALUES (1)"]]

    handle.later(_insert(3))
    await eventually(lambda: _rows(engine.path) == [1, 2, 3])


async def test_another_connections_commit_is_noticed_and_the_engines_own_are_not(
    engine: Engine, tmp_path: Path
) -> None:
    changes: list[str] = []
    handle = engine.handle(
        "watching", closed=Closed, failed=Failed, on_change=lambda: changes.append("changed")
    )
    await handle.open()
    await handle.write(_insert(1), synced=False)
    await handle.inside(lambda conn: None)
    assert changes == []

    other = Engine(tmp_path / "e.db", name="other")  # as another process would
    await other.acquire()
    try:
        await handle_of(other).write(_insert(2), synced=False)
    finally:
        await other.release()
    await handle.inside(lambda conn: None)
    assert changes == ["changed"]
    await handle.write(_insert(3), synced=False)
    assert changes == ["changed"]
    await handle.close()


async def test_jobs_queued_at_close_run_and_later_ones_are_refused(tmp_path: Path) -> None:
    engine = Engine(tmp_path / "e.db", setup=[_setup])
    await engine.acquire()
    handle = engine.handle("the test store", closed=Closed, failed=Failed)
    handle.later(_insert(1))
    await engine.release()

    assert _rows(tmp_path / "e.db") == [1]
    with pytest.raises(Closed, match="the test store is not open"):
        await handle.write(_insert(2), synced=False)
    with pytest.raises(Closed):
        await handle.read(lambda conn: None)


async def test_the_engine_opens_with_its_first_user_and_closes_with_its_last(
    tmp_path: Path,
) -> None:
    engine = Engine(tmp_path / "e.db", setup=[_setup])
    await engine.acquire()
    await engine.acquire()
    handle = handle_of(engine)
    await engine.release()
    await handle.write(_insert(1), synced=False)  # still open for the other user
    await engine.release()
    with pytest.raises(RuntimeError, match="is not open"):
        await handle.write(_insert(2), synced=False)
    # Closed, the WAL is folded into the file.
    assert not (tmp_path / "e.db-wal").exists() or (tmp_path / "e.db-wal").stat().st_size == 0

"""What only the embedded SQLite log promises: group commit, bounded queue, its file's health."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tests.storage.eventlog_support import MovableClock, body_of, new_event

from stellwerk.seams import AppendStatus, EventLogError, LogOverloaded, NewEvent
from stellwerk.storage.eventlog.sqlite import SqliteEventLog
from stellwerk.storage.eventlog.sqlite.dedup import key_digest
from stellwerk.storage.eventlog.sqlite.schema import SEGMENT_EVENTS
from stellwerk.storage.sqlite import EVENTS_FILE


class CommitGate:
    """An `on_commit` observer that can hold the writer thread after its next commit.

    Holding the writer is how a test lets appends pile up in the queue deterministically.
    """

    def __init__(self) -> None:
        self.batches: list[int] = []
        self._hold = False
        self._held = threading.Event()
        self._release = threading.Event()

    def __call__(self, events: int, seconds: float) -> None:
        assert seconds >= 0
        self.batches.append(events)
        if self._hold:
            self._hold = False
            self._held.set()
            self._release.wait()

    def hold_next(self) -> None:
        self._hold = True

    async def wait_held(self) -> None:
        await asyncio.to_thread(self._held.wait)

    def release(self) -> None:
        self._release.set()


async def _start_tasks(count: int) -> None:
    """Let tasks created just before run up to their first real wait (their append is queued)."""
    for _ in range(count):
        await asyncio.sleep(0)


async def test_concurrent_appends_share_one_commit(tmp_path: Path) -> None:
    gate = CommitGate()
    async with SqliteEventLog(tmp_path / EVENTS_FILE, on_commit=gate) as log:
        gate.hold_next()
        first = asyncio.create_task(log.append([new_event("first")]))
        await gate.wait_held()

        singles = [asyncio.create_task(log.append([new_event(f"e{i}")])) for i in range(100)]
        await _start_tasks(1)
        assert log.queued_events == 100
        gate.release()
        results = await asyncio.gather(first, *singles)

        assert gate.batches == [1, 100]
        positions = [r[0].position for r in results]
        assert positions == sorted(positions)
        assert len(set(positions)) == 101
        assert len(await log.read("acme", "default")) == 101


async def test_a_full_queue_refuses_instead_of_buffering(tmp_path: Path) -> None:
    gate = CommitGate()
    log = SqliteEventLog(tmp_path / EVENTS_FILE, on_commit=gate, max_queue_events=10)
    async with log:
        gate.hold_next()
        first = asyncio.create_task(log.append([new_event("first")]))
        await gate.wait_held()

        queued = asyncio.create_task(log.append([new_event(f"q{i}") for i in range(6)]))
        await _start_tasks(1)
        with pytest.raises(LogOverloaded) as refused:
            await log.append([new_event(f"r{i}") for i in range(5)])
        assert refused.value.retry_after >= 1
        fits = asyncio.create_task(log.append([new_event(f"f{i}") for i in range(4)]))
        await _start_tasks(1)
        assert log.queued_events == 10

        gate.release()
        await asyncio.gather(first, queued, fits)
        stored = {e.id for e in await log.read("acme", "default")}
        assert stored == {"first"} | {f"q{i}" for i in range(6)} | {f"f{i}" for i in range(4)}
        # With the queue drained the log takes appends again.
        assert (await log.append([new_event("r0")]))[0].status is AppendStatus.STORED


async def test_an_append_waiting_too_long_makes_the_log_refuse_more(tmp_path: Path) -> None:
    gate = CommitGate()
    log = SqliteEventLog(tmp_path / EVENTS_FILE, on_commit=gate, max_queue_delay=0.0)
    async with log:
        gate.hold_next()
        first = asyncio.create_task(log.append([new_event("first")]))
        await gate.wait_held()
        waiting = asyncio.create_task(log.append([new_event("waiting")]))
        await _start_tasks(1)

        with pytest.raises(LogOverloaded):
            await log.append([new_event("refused")])
        gate.release()
        await asyncio.gather(first, waiting)


async def test_one_batch_above_the_bounds_gets_through_an_empty_queue(tmp_path: Path) -> None:
    async with SqliteEventLog(tmp_path / EVENTS_FILE, max_queue_events=5) as log:
        results = await log.append([new_event(f"e{i}") for i in range(50)])
    assert len({r.position for r in results}) == 50


async def test_appends_are_acknowledged_after_the_closing_drain(tmp_path: Path) -> None:
    log = SqliteEventLog(tmp_path / EVENTS_FILE)
    await log.start()
    pending = [asyncio.create_task(log.append([new_event(f"e{i}")])) for i in range(20)]
    await _start_tasks(1)
    await log.close()
    results = await asyncio.gather(*pending)
    assert all(r[0].status is AppendStatus.STORED for r in results)
    async with SqliteEventLog(tmp_path / EVENTS_FILE) as reopened:
        assert len(await reopened.read("acme", "default")) == 20


async def test_a_failing_observer_does_not_fail_durable_appends(tmp_path: Path) -> None:
    def broken(events: int, seconds: float) -> None:
        raise RuntimeError("metrics are down")

    async with SqliteEventLog(tmp_path / EVENTS_FILE, on_commit=broken) as log:
        (result,) = await log.append([new_event("e1")])
        assert result.status is AppendStatus.STORED


async def test_a_cancelled_caller_leaves_the_writer_working(tmp_path: Path) -> None:
    gate = CommitGate()
    async with SqliteEventLog(tmp_path / EVENTS_FILE, on_commit=gate) as log:
        gate.hold_next()
        first = asyncio.create_task(log.append([new_event("first")]))
        await gate.wait_held()
        abandoned = asyncio.create_task(log.append([new_event("abandoned")]))
        await _start_tasks(1)
        abandoned.cancel()
        gate.release()
        await first
        (after,) = await log.append([new_event("after")])
        assert after.status is AppendStatus.STORED
        # Once queued an append is stored even if its caller has gone (it cannot be unsent).
        ids = [e.id for e in await log.read("acme", "default")]
        assert ids == ["first", "abandoned", "after"]


async def test_a_body_that_is_not_one_json_object_is_refused(tmp_path: Path) -> None:
    bad = NewEvent("acme", "default", "e1", "/s", "t", None, b"[1]")
    async with SqliteEventLog(tmp_path / EVENTS_FILE) as log:
        with pytest.raises(ValueError, match="e1"):
            await log.append([bad])
        assert await log.read("acme", "default") == []


async def test_expired_dedup_entries_are_swept(tmp_path: Path) -> None:
    clock = MovableClock()
    path = tmp_path / EVENTS_FILE
    log = SqliteEventLog(
        path,
        clock=clock,
        dedup_window=timedelta(hours=1),
        dedup_sweep_interval=0,
        dedup_flush_entries=1,  # every group's entries go to the table at once
    )
    async with log:
        await log.append([new_event(f"old{i}") for i in range(30)])
        clock.advance(timedelta(hours=2))
        (new,) = await log.append([new_event("new")])
        # The sweep runs in the writer after a group; the next append is queued behind it.
        (newer,) = await log.append([new_event("newer")])

    with sqlite3.connect(path) as conn:
        kept = {row[0] for row in conn.execute("SELECT position FROM dedup_keys")}
        assert kept == {new.position, newer.position}
        assert conn.execute("SELECT sum(count) FROM segments").fetchone()[0] == 32


async def test_the_file_is_wal_and_intact_after_a_busy_run(tmp_path: Path) -> None:
    path = tmp_path / EVENTS_FILE
    async with SqliteEventLog(path, max_group_events=64) as log:
        await asyncio.gather(
            *(
                log.append([new_event(f"t{task}-{i}", bus=f"bus{task % 3}") for i in range(10)])
                for task in range(50)
            )
        )
        await log.trim(datetime.now(UTC) + timedelta(days=1))
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*) FROM segments").fetchone()[0] == 0


async def test_a_failed_commit_fails_its_whole_group_and_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / EVENTS_FILE
    async with SqliteEventLog(path) as log:
        (before,) = await log.append([new_event("before")])
    with sqlite3.connect(path) as conn:
        # A real SQLite error in the middle of a group's transaction.
        conn.execute(
            "CREATE TRIGGER poison BEFORE INSERT ON segments WHEN instr(NEW.meta, 'poison') > 0"
            " BEGIN SELECT RAISE(ABORT, 'poisoned event'); END"
        )
    gate = CommitGate()
    async with SqliteEventLog(path, on_commit=gate) as log:
        gate.hold_next()
        held = asyncio.create_task(log.append([new_event("held")]))
        await gate.wait_held()
        fresh_bus = asyncio.create_task(log.append([new_event("f1", bus="fresh")]))
        poisoned = asyncio.create_task(log.append([new_event("poison")]))
        await _start_tasks(1)
        gate.release()
        await held
        for task in (fresh_bus, poisoned):
            with pytest.raises(EventLogError, match="poisoned event"):
                await task

        (after,) = await log.append([new_event("f2", bus="fresh")])
        assert [e.id for e in await log.read("acme", "fresh")] == ["f2"]
        assert [e.id for e in await log.read("acme", "default")] == ["before", "held"]
        assert after.position > before.position
        assert await log.last_position("acme", "fresh") == after.position
        # The failed group stored no dedup entry either: the event can be sent again.
        (again,) = await log.append([new_event("f1", bus="fresh")])
        assert again.status is AppendStatus.STORED


async def test_queued_bytes_are_bounded_too(tmp_path: Path) -> None:
    gate = CommitGate()
    big = [new_event(f"big{i}", data="x" * 4000) for i in range(3)]
    log = SqliteEventLog(tmp_path / EVENTS_FILE, on_commit=gate, max_queue_bytes=10_000)
    async with log:
        gate.hold_next()
        first = asyncio.create_task(log.append([new_event("first")]))
        await gate.wait_held()
        queued = asyncio.create_task(log.append(big[:2]))
        await _start_tasks(1)
        with pytest.raises(LogOverloaded, match="bytes"):
            await log.append(big[2:])
        gate.release()
        await asyncio.gather(first, queued)
        (later,) = await log.append(big[2:])
        assert later.status is AppendStatus.STORED


async def test_the_writer_bounds_the_wal_when_background_checkpoints_lag(tmp_path: Path) -> None:
    wal_sizes: dict[str, int] = {}
    for name, max_wal_bytes in [("bounded", 64 * 1024), ("unbounded", 2**40)]:
        path = tmp_path / name / EVENTS_FILE
        # No background checkpoints: the writer's own bound is all that folds the WAL in.
        log = SqliteEventLog(path, checkpoint_interval=None, max_wal_bytes=max_wal_bytes)
        async with log:
            for i in range(40):
                await log.append([new_event(f"{i}-{j}", data="x" * 1000) for j in range(10)])
            wal_sizes[name] = path.with_name(path.name + "-wal").stat().st_size
            assert len(await log.read("acme", "default", limit=1000)) == 400
    assert wal_sizes["bounded"] < 256 * 1024 < wal_sizes["unbounded"]


async def test_a_hash_collision_keeps_dedup_exact(tmp_path: Path) -> None:
    path = tmp_path / EVENTS_FILE
    async with SqliteEventLog(path) as log:
        (first,) = await log.append([new_event("first")])
    stream = 1
    taken, tag = key_digest(stream, "/orders", "victim")
    with sqlite3.connect(path) as conn:
        # Another key already holds the hash "victim" will have: what a real collision looks like.
        conn.execute(
            "INSERT INTO dedup_keys (hash, position, tag) VALUES (?, ?, ?)",
            (taken, first.position, tag ^ 1),
        )
    async with SqliteEventLog(path) as log:
        (stored,) = await log.append([new_event("victim")])
        assert stored.status is AppendStatus.STORED
        (again,) = await log.append([new_event("victim")])
        assert again.status is AppendStatus.DUPLICATE
        assert again.position == stored.position
    async with SqliteEventLog(path) as log:  # the spilled entry is found after reopening too
        (third,) = await log.append([new_event("victim")])
        assert third.status is AppendStatus.DUPLICATE
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT id FROM dedup_spill").fetchall() == [("victim",)]


async def test_a_log_of_the_row_per_event_layout_is_moved_into_segments(tmp_path: Path) -> None:
    path = tmp_path / EVENTS_FILE
    legacy = [(1, "a", b'{"id":"a","tenant":"acme"}'), (2, "b", b'{"id":"b","tenant":"acme"}')]
    with sqlite3.connect(path) as conn:
        conn.executescript(
            """
            CREATE TABLE streams (stream INTEGER PRIMARY KEY, tenant TEXT NOT NULL,
                bus TEXT NOT NULL, last_position INTEGER NOT NULL DEFAULT 0, UNIQUE (tenant, bus));
            CREATE TABLE events (position INTEGER PRIMARY KEY, stream INTEGER NOT NULL,
                recorded_us INTEGER NOT NULL, id TEXT NOT NULL, source TEXT NOT NULL,
                type TEXT NOT NULL, subject TEXT, body BLOB NOT NULL);
            CREATE TABLE marks (position INTEGER PRIMARY KEY, recorded_us INTEGER NOT NULL);
            CREATE TABLE dedup (position INTEGER PRIMARY KEY, stream INTEGER NOT NULL,
                source TEXT NOT NULL, id TEXT NOT NULL, recorded_us INTEGER NOT NULL);
            INSERT INTO streams VALUES (1, 'acme', 'default', 2);
            """
        )
        now_us = int(datetime.now(UTC).timestamp() * 1e6)
        conn.execute("INSERT INTO marks VALUES (1, ?)", (now_us,))
        for position, event_id, body in legacy:
            conn.execute(
                "INSERT INTO events VALUES (?, 1, ?, ?, '/orders', 'order.created', NULL, ?)",
                (position, now_us, event_id, body),
            )
            conn.execute(
                "INSERT INTO dedup VALUES (?, 1, '/orders', ?, ?)", (position, event_id, now_us)
            )
    async with SqliteEventLog(path) as log:
        read = await log.read("acme", "default")
        assert [(e.position, e.id, e.body) for e in read] == legacy
        (repeat,) = await log.append([new_event("b")])
        assert repeat.status is AppendStatus.DUPLICATE
        assert repeat.position == 2
        (fresh,) = await log.append([new_event("c")])
        assert fresh.position == 3
    with sqlite3.connect(path) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert "events" not in tables
        assert "dedup" not in tables


async def test_reads_cross_segments_of_interleaved_buses(tmp_path: Path) -> None:
    gate = CommitGate()
    async with SqliteEventLog(tmp_path / EVENTS_FILE, on_commit=gate) as log:
        gate.hold_next()
        first = asyncio.create_task(log.append([new_event("first")]))
        await gate.wait_held()
        # One group with appends of two buses, interleaved, and runs longer than a segment.
        size = SEGMENT_EVENTS + 10
        appends = [
            asyncio.create_task(
                log.append([new_event(f"{bus}-{n}-{i}", bus=bus) for i in range(size // 2)])
            )
            for n in range(2)
            for bus in ("default", "audit")
        ]
        await _start_tasks(1)
        gate.release()
        await asyncio.gather(first, *appends)
        assert gate.batches == [1, 2 * size]
        for bus, count in (("default", 2 * (size // 2) + 1), ("audit", 2 * (size // 2))):
            everything = await log.read("acme", bus, limit=10_000)
            assert len(everything) == count
            positions = [e.position for e in everything]
            assert positions == sorted(set(positions))
            # Pages that start and end inside segments give the same events.
            paged = []
            after = 0
            while page := await log.read("acme", bus, after=after, limit=97):
                paged.extend(page)
                after = page[-1].position
            assert paged == everything
            assert all(e.bus == bus and body_of(e.body)["bus"] == bus for e in everything)

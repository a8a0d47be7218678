"""What only the embedded log promises: group commit, a bounded queue, its files' and index's
health, dedup runs, readers in another process, recovery of a torn tail, the old layout moved."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from array import array
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.polling import eventually
from tests.storage.eventlog_support import ACME_DEFAULT, MovableClock, body_of, new_event

from stellwerk.clock import from_us, to_us
from stellwerk.events.rfc3339 import format_rfc3339
from stellwerk.refs import BusRef, TenantName
from stellwerk.seams import (
    AppendResult,
    AppendStatus,
    EventLogError,
    LogClosed,
    LogOverloaded,
    NewEvent,
)
from stellwerk.storage.eventlog.sqlite import SqliteEventLog, chunks
from stellwerk.storage.eventlog.sqlite.commit import MAX_CHUNK_EVENTS, GroupCommitter, _Plan
from stellwerk.storage.eventlog.sqlite.dedup import block_digests, block_positions, halves
from stellwerk.storage.eventlog.sqlite.index import INDEX_FILE
from stellwerk.storage.sqlite import LOG_DIR


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
    async with SqliteEventLog(tmp_path / LOG_DIR, on_commit=gate) as log:
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
        assert len(await log.read(ACME_DEFAULT)) == 101


async def test_an_idle_writer_takes_a_round_of_appends_in_one_group(tmp_path: Path) -> None:
    gate = CommitGate()
    async with SqliteEventLog(tmp_path / LOG_DIR, on_commit=gate) as log:
        writer = log._writer
        assert writer is not None
        await eventually(lambda: writer._idle, what="the writer waits for appends")
        # Started in one round of the loop: the writer is woken once that round has run, not
        # at the first of them, so it finds them all.
        appends = [log.append([new_event(f"e{i}")]) for i in range(1000)]
        results = await asyncio.gather(*appends)

        assert gate.batches == [1000]
        assert [r[0].position for r in results] == list(range(1, 1001))


async def test_a_full_queue_refuses_instead_of_buffering(tmp_path: Path) -> None:
    gate = CommitGate()
    log = SqliteEventLog(tmp_path / LOG_DIR, on_commit=gate, max_queue_events=10)
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
        stored = {e.id for e in await log.read(ACME_DEFAULT)}
        assert stored == {"first"} | {f"q{i}" for i in range(6)} | {f"f{i}" for i in range(4)}
        # With the queue drained the log takes appends again.
        assert (await log.append([new_event("r0")]))[0].status is AppendStatus.STORED


async def test_an_append_waiting_too_long_makes_the_log_refuse_more(tmp_path: Path) -> None:
    gate = CommitGate()
    log = SqliteEventLog(tmp_path / LOG_DIR, on_commit=gate, max_queue_delay=0.0)
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
    async with SqliteEventLog(tmp_path / LOG_DIR, max_queue_events=5) as log:
        results = await log.append([new_event(f"e{i}") for i in range(50)])
    assert len({r.position for r in results}) == 50


async def test_appends_are_acknowledged_after_the_closing_drain(tmp_path: Path) -> None:
    log = SqliteEventLog(tmp_path / LOG_DIR)
    await log.start()
    pending = [asyncio.create_task(log.append([new_event(f"e{i}")])) for i in range(20)]
    await _start_tasks(1)
    await log.close()
    results = await asyncio.gather(*pending)
    assert all(r[0].status is AppendStatus.STORED for r in results)
    async with SqliteEventLog(tmp_path / LOG_DIR) as reopened:
        assert len(await reopened.read(ACME_DEFAULT)) == 20


async def test_appends_from_other_threads_loops_are_each_answered_across_the_close(
    tmp_path: Path,
) -> None:
    """The hand-over takes no lock with the writer: appends from several loops at once, some
    while the log closes, are each answered (stored, or refused as closed), and every one
    answered as stored is in the log."""
    log = SqliteEventLog(tmp_path / LOG_DIR)
    await log.start()
    outcomes: dict[str, list[list[AppendResult] | LogClosed]] = {"a": [], "b": []}
    started = threading.Barrier(3)

    def appender(name: str) -> None:
        async def run() -> None:
            started.wait()
            for i in range(300):
                try:
                    outcomes[name].append(await log.append([new_event(f"{name}{i}")]))
                except LogClosed as exc:
                    outcomes[name].append(exc)

        asyncio.run(run())

    threads = [threading.Thread(target=appender, args=(n,)) for n in outcomes]
    for thread in threads:
        thread.start()
    await asyncio.to_thread(started.wait)
    # Close mid-stream: once each thread has had a few appends answered.
    await eventually(lambda: all(len(answers) >= 5 for answers in outcomes.values()))
    await log.close()
    for thread in threads:
        await asyncio.to_thread(thread.join, 30)  # a hang guard
        assert not thread.is_alive()
    stored = [
        result[0].position
        for answers in outcomes.values()
        for result in answers
        if isinstance(result, list)
    ]
    assert all(len(answers) == 300 for answers in outcomes.values())
    async with SqliteEventLog(tmp_path / LOG_DIR) as reopened:
        assert sorted(e.position for e in await reopened.read(ACME_DEFAULT)) == sorted(stored)


async def test_a_failing_observer_does_not_fail_durable_appends(tmp_path: Path) -> None:
    def broken(events: int, seconds: float) -> None:
        raise RuntimeError("metrics are down")

    async with SqliteEventLog(tmp_path / LOG_DIR, on_commit=broken) as log:
        (result,) = await log.append([new_event("e1")])
        assert result.status is AppendStatus.STORED


async def test_a_cancelled_caller_leaves_the_writer_working(tmp_path: Path) -> None:
    gate = CommitGate()
    async with SqliteEventLog(tmp_path / LOG_DIR, on_commit=gate) as log:
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
        ids = [e.id for e in await log.read(ACME_DEFAULT)]
        assert ids == ["first", "abandoned", "after"]


async def test_a_body_that_is_not_one_json_object_is_refused(tmp_path: Path) -> None:
    bad = NewEvent(TenantName("acme"), "default", "e1", "/s", "t", None, b"[1]")
    async with SqliteEventLog(tmp_path / LOG_DIR) as log:
        with pytest.raises(ValueError, match="e1"):
            await log.append([bad])
        assert await log.read(ACME_DEFAULT) == []


async def test_queued_bytes_are_bounded_too(tmp_path: Path) -> None:
    gate = CommitGate()
    big = [new_event(f"big{i}", data="x" * 4000) for i in range(3)]
    log = SqliteEventLog(tmp_path / LOG_DIR, on_commit=gate, max_queue_bytes=10_000)
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


async def test_reads_cross_chunks_of_interleaved_buses(tmp_path: Path) -> None:
    gate = CommitGate()
    async with SqliteEventLog(tmp_path / LOG_DIR, on_commit=gate) as log:
        gate.hold_next()
        first = asyncio.create_task(log.append([new_event("first")]))
        await gate.wait_held()
        # One group with appends of two buses, interleaved, and runs longer than a chunk.
        size = MAX_CHUNK_EVENTS + 10
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
            everything = await log.read(BusRef(TenantName("acme"), bus), limit=10_000)
            assert len(everything) == count
            positions = [e.position for e in everything]
            assert positions == sorted(set(positions))
            # Pages that start and end inside chunks give the same events.
            paged = []
            after = 0
            while page := await log.read(BusRef(TenantName("acme"), bus), after=after, limit=97):
                paged.extend(page)
                after = page[-1].position
            assert paged == everything
            assert all(e.bus == bus and body_of(e.body)["bus"] == bus for e in everything)


def test_a_group_laid_out_at_once_is_the_group_laid_out_event_by_event() -> None:
    # A group without duplicates takes the quick way (a chunk per run, built list by list); one
    # with duplicates goes event by event. Readers and recovery rely on the same bytes.
    events = [
        new_event(f"{bus}-{i}", bus=bus, subject=None if i % 3 else f"s{i}")
        for bus, count in (("default", 3), ("audit", MAX_CHUNK_EVENTS + 5), ("default", 2))
        for i in range(count)
    ]
    recorded = b"2026-12-05T05:00:00.000000Z"
    at_once = _Plan(41, 7, recorded)
    at_once.store_all(events)
    one_by_one = _Plan(41, 7, recorded)
    for event in events:
        one_by_one.store(event)
    one_by_one.close_run()
    assert at_once.pieces == one_by_one.pieces
    assert at_once.runs == one_by_one.runs
    assert len(at_once.runs) == 4  # default, audit in two chunks, default again
    assert at_once.results == one_by_one.results
    assert at_once.position == one_by_one.position == 41 + len(events)
    first = chunks.decode(b"".join(at_once.pieces[0]), check=True)
    assert body_of(first.body(0)) == {
        **body_of(events[0].body),
        "tenant": "acme",
        "bus": "default",
        "recordedtime": recorded.decode(),
    }


@contextlib.contextmanager
def _index(path: Path) -> Iterator[sqlite3.Connection]:
    """The index on a connection of the test's own, committed at the block's end and closed.

    Fetch each answer before asserting: a statement left open (by a failed assertion) keeps a
    snapshot, even on a closed connection, that the log's closing checkpoint waits 10 s for."""
    with contextlib.closing(sqlite3.connect(path / INDEX_FILE)) as conn, conn:
        yield conn


async def test_each_event_is_in_the_files_once_and_the_index_holds_no_body(tmp_path: Path) -> None:
    path = tmp_path / LOG_DIR
    async with SqliteEventLog(path, index_interval=0) as log:
        await log.append([new_event(f"e{i}", data={"note": f"unique-{i}-7d1e"}) for i in range(50)])
        assert len(await log.read(ACME_DEFAULT)) == 50
    files = sorted(path.glob("*.log"))
    raw = b"".join(f.read_bytes() for f in files)
    assert all(raw.count(f"unique-{i}-7d1e".encode()) == 1 for i in range(50))
    with _index(path) as conn:
        dumped = "\n".join(conn.iterdump())
        assert "unique-" not in dumped
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_dedup_entries_move_to_runs_and_still_find_duplicates(tmp_path: Path) -> None:
    clock = MovableClock()
    path = tmp_path / LOG_DIR
    settings = {
        "clock": clock,
        "dedup_window": timedelta(hours=1),
        "index_interval": 0,
        "dedup_run_entries": 8,
        "dedup_epoch_entries": 16,
    }
    async with SqliteEventLog(path, **settings) as log:  # type: ignore[arg-type]
        first = [(await log.append([new_event(f"old{i}")]))[0] for i in range(40)]
        # Appends are answered before the indexer writes their runs (a loaded machine kept it
        # three runs behind the fortieth answer): the lookups below are to find them on disk.
        dedup = log._committer.dedup  # type: ignore[union-attr]
        await eventually(lambda: not dedup.frozen, what="the indexer wrote every frozen run")
        with _index(path) as conn:
            runs = conn.execute("SELECT count(DISTINCT run) FROM dedup_blocks").fetchone()[0]
            with_filter = "SELECT count(*) FROM dedup_epochs WHERE filter IS NOT NULL"
            closed = conn.execute(with_filter).fetchone()[0]
            assert runs >= 3
            assert closed >= 1
        # Found in runs of the open epoch and in runs of closed epochs alike (the forty are
        # five whole runs: none is left in memory).
        again = await log.append([new_event(f"old{i}") for i in range(40)])
        assert all(r.status is AppendStatus.DUPLICATE for r in again)
        assert [r.position for r in again] == [r.position for r in first]

    async with SqliteEventLog(path, **settings) as log:  # type: ignore[arg-type]
        again = await log.append([new_event(f"old{i}") for i in range(40)])
        assert [r.position for r in again] == [r.position for r in first]
        clock.advance(timedelta(hours=2))
        # Out of the window: the same ids are new events now, and old epochs are deleted.
        fresh = await log.append([new_event(f"old{i}") for i in range(40)])
        assert all(r.status is AppendStatus.STORED for r in fresh)
        for i in range(48):
            await log.append([new_event(f"new{i}")])
        # Each index commit deletes one expired run, and each frozen run is written in a
        # commit of its own: once all seven are written, the five old runs are gone. (Runs
        # still frozen at the close are written without deleting any: under load the old
        # check after the close found runs left.)
        dedup = log._committer.dedup  # type: ignore[union-attr]
        await eventually(lambda: not dedup.frozen, what="the indexer wrote every frozen run")
    with _index(path) as conn:
        kept = [
            p
            for (b,) in conn.execute("SELECT entries FROM dedup_blocks")
            for p in block_positions(b)
        ]
        assert min(kept, default=None) is None or min(kept) > first[-1].position


async def test_a_quiet_logs_dedup_filters_are_sized_for_the_keys_in_its_window(
    tmp_path: Path,
) -> None:
    """A log that has taken many keys but holds few in its window makes each new epoch's
    filter for those few: its filters do not keep the size of its busiest epoch (by doubling,
    a quiet log came to hold full-size filters, 16-32 MiB, for good)."""
    clock = MovableClock()
    path = tmp_path / LOG_DIR
    window = timedelta(hours=1)
    settings = {
        "clock": clock,
        "dedup_window": window,
        "index_interval": 0,
        "dedup_run_entries": 8,
        "dedup_epoch_entries": 1024,
    }
    async with SqliteEventLog(path, **settings) as log:  # type: ignore[arg-type]
        for i in range(600):  # 16 events a window
            clock.advance(window / 16)
            await log.append([new_event(f"quiet{i}")])
    # Closing stores the open epoch's filter too. A filter for the window's 16-odd keys, at 24
    # bits a key rounded up to a power of two words, has at most 16 words.
    with _index(path) as conn:
        sizes = [len(f) for (f,) in conn.execute("SELECT filter FROM dedup_epochs")]
    assert sizes
    assert max(sizes) <= 16 * 8, sizes


async def test_runs_an_earlier_version_wrote_a_row_per_entry_are_packed_and_still_found(
    tmp_path: Path,
) -> None:
    """An index whose runs are rows of `dedup_entries` (as before dedup blocks) opens with
    them packed into blocks, and every key in them is still a duplicate."""
    path = tmp_path / LOG_DIR
    settings = {"index_interval": 0, "dedup_run_entries": 8, "dedup_epoch_entries": 16}
    async with SqliteEventLog(path, **settings) as log:  # type: ignore[arg-type]
        first = await log.append([new_event(f"e{i}") for i in range(40)])
    with _index(path) as conn:  # the runs as the earlier version laid them out
        rows = [
            (run, *halves(digest), position)
            for run, entries in conn.execute("SELECT run, entries FROM dedup_blocks")
            for digest, position in zip(
                block_digests(entries), block_positions(entries), strict=True
            )
        ]
        assert len(rows) == 40
        conn.executemany("INSERT INTO dedup_entries VALUES (?, ?, ?, ?)", rows)
        conn.execute("DELETE FROM dedup_blocks")
        conn.execute("DELETE FROM dedup_epochs WHERE filter IS NULL")  # rebuilt from the rows
    async with SqliteEventLog(path, **settings) as log:  # type: ignore[arg-type]
        with _index(path) as conn:
            assert conn.execute("SELECT count(*) FROM dedup_entries").fetchone()[0] == 0
            assert conn.execute("SELECT count(*) FROM dedup_blocks").fetchone()[0] > 0
        again = await log.append([new_event(f"e{i}") for i in range(40)])
    assert all(r.status is AppendStatus.DUPLICATE for r in again)
    assert [r.position for r in again] == [r.position for r in first]


async def test_a_reading_process_sees_the_newest_events_before_they_are_indexed(
    tmp_path: Path,
) -> None:
    path = tmp_path / LOG_DIR
    async with (
        SqliteEventLog(path, index_interval=3600) as writer,
        SqliteEventLog(path, appends=False) as reader,
    ):
        stored = await writer.append([new_event(f"e{i}", bus=f"b{i % 2}") for i in range(10)])
        with _index(path) as conn:
            assert conn.execute("SELECT count(*) FROM chunks").fetchone()[0] == 0
        assert [e.id for e in await reader.read(BusRef(TenantName("acme"), "b0"))] == [
            f"e{i}" for i in range(0, 10, 2)
        ]
        assert await reader.last_position(BusRef(TenantName("acme"), "b1")) == stored[-1].position
        with pytest.raises(EventLogError, match="another one appends"):
            await reader.append([new_event("nope")])


async def test_reads_from_a_long_tail_start_where_they_are_asked_to(tmp_path: Path) -> None:
    """Nothing indexed: reads and the end of each bus come from the tail, cut by bisection."""
    path = tmp_path / LOG_DIR
    async with (
        SqliteEventLog(path, index_interval=3600) as writer,
        SqliteEventLog(path, appends=False) as reader,
    ):
        stored: list[tuple[NewEvent, AppendResult]] = []
        for group in range(40):  # a group a call: one chunk per bus and call
            events = [new_event(f"e{group}.{i}", bus=f"b{i % 3}") for i in range(group % 4 + 1)]
            stored += zip(events, await writer.append(events), strict=True)
        for bus in ("b0", "b1", "b2"):
            ours = [(e.id, r.position) for e, r in stored if e.bus == bus]
            ref = BusRef(TenantName("acme"), bus)
            assert await reader.last_position(ref) == ours[-1][1]
            for after in (0, ours[0][1], ours[len(ours) // 2][1], ours[-1][1]):
                read = await reader.read(ref, after=after, limit=5)
                assert [(e.id, e.position) for e in read] == [(i, p) for i, p in ours if p > after][
                    :5
                ]


async def test_a_torn_tail_is_cut_off_and_appends_go_on_after_it(tmp_path: Path) -> None:
    path = tmp_path / LOG_DIR
    async with SqliteEventLog(path, index_interval=3600) as log:
        stored = await log.append([new_event(f"e{i}") for i in range(5)])
    (newest,) = sorted(path.glob("*.log"))[-1:]
    intact = newest.stat().st_size
    with newest.open("ab") as f:  # what a write cut short by a power failure leaves
        f.write(b"SWL1" + b"\x00" * 40 + b"half a chunk")
    async with SqliteEventLog(path) as log:
        assert newest.stat().st_size == intact
        (after,) = await log.append([new_event("after")])
        assert after.position == stored[-1].position + 1
        assert [e.id for e in await log.read(ACME_DEFAULT)] == [
            *(f"e{i}" for i in range(5)),
            "after",
        ]


async def test_trimming_deletes_whole_files_and_keeps_the_index_small(tmp_path: Path) -> None:
    clock = MovableClock()
    path = tmp_path / LOG_DIR
    async with SqliteEventLog(
        path, clock=clock, dedup_window=timedelta(hours=1), max_file_bytes=20_000
    ) as log:
        for round_no in range(10):
            await log.append([new_event(f"r{round_no}-{i}", data="x" * 500) for i in range(20)])
        assert len(list(path.glob("*.log"))) >= 5
        clock.advance(timedelta(days=1))
        (kept,) = await log.append([new_event("kept")])
        assert await log.trim(clock.now - timedelta(hours=1)) == 200
        assert [e.id for e in await log.read(ACME_DEFAULT)] == ["kept"]
        assert len(list(path.glob("*.log"))) <= 2
        assert kept.position == await log.last_position(ACME_DEFAULT)


async def test_a_log_kept_in_one_sqlite_file_is_moved_into_files(tmp_path: Path) -> None:
    legacy = tmp_path / "events.db"
    now_us = int(datetime.now(UTC).timestamp() * 1e6)
    bodies = [b'{"id":"a","tenant":"acme"}', b'{"id":"b","tenant":"acme"}']
    with sqlite3.connect(legacy) as conn:
        conn.executescript(
            """
            CREATE TABLE streams (stream INTEGER PRIMARY KEY, tenant TEXT NOT NULL,
                bus TEXT NOT NULL, last_position INTEGER NOT NULL DEFAULT 0, UNIQUE (tenant, bus));
            CREATE TABLE segments (position INTEGER PRIMARY KEY, stream INTEGER NOT NULL,
                count INTEGER NOT NULL, recorded_us INTEGER NOT NULL, meta BLOB NOT NULL,
                ends BLOB NOT NULL, bodies BLOB NOT NULL);
            CREATE TABLE marks (position INTEGER PRIMARY KEY, recorded_us INTEGER NOT NULL);
            INSERT INTO streams VALUES (1, 'acme', 'default', 3);
            """
        )
        meta = msgspec.msgpack.encode(
            [
                ["a", "/orders", "order.created", None],
                ["", "", "", None],
                ["b", "/orders", "t", "s"],
            ]
        )
        ends = array("I", [len(bodies[0]), len(bodies[0]), len(bodies[0]) + len(bodies[1])])
        conn.execute(
            "INSERT INTO segments VALUES (1, 1, 3, ?, ?, ?, ?)",
            (now_us, meta, ends.tobytes(), b"".join(bodies)),
        )
        conn.execute("INSERT INTO marks VALUES (1, ?)", (now_us,))
    path = tmp_path / LOG_DIR
    async with SqliteEventLog(path, legacy=legacy) as log:
        read = await log.read(ACME_DEFAULT)
        # The event erased in the old log (no body) stays erased: position 2 is skipped.
        assert [(e.position, e.id, e.subject, e.body) for e in read] == [
            (1, "a", None, bodies[0]),
            (3, "b", "s", bodies[1]),
        ]
        (repeat,) = await log.append([new_event("b")])
        assert repeat.status is AppendStatus.DUPLICATE
        assert repeat.position == 3
        (fresh,) = await log.append([new_event("c")])
        assert fresh.position == 4
    assert not legacy.exists()
    async with SqliteEventLog(path, legacy=legacy) as log:  # moved once, not again
        assert [e.id for e in await log.read(ACME_DEFAULT)] == [
            "a",
            "b",
            "c",
        ]


_LAST_US = to_us(datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC))


@given(st.lists(st.integers(min_value=0, max_value=_LAST_US), min_size=1, max_size=20))
def test_the_writers_recorded_times_read_as_format_rfc3339_writes_them(moments: list[int]) -> None:
    committer = GroupCommitter.__new__(GroupCommitter)  # only the text's cache is used
    committer._recorded_second, committer._recorded_prefix = -1, b""
    for us in [*sorted(moments), moments[0], moments[0] + 1]:
        us = min(us, _LAST_US)
        assert committer._recorded_text(us) == format_rfc3339(from_us(us)).encode()

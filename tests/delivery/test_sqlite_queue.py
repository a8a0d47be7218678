"""What the embedded queue does beyond the shared contract: leases in memory, shared bodies,
which writes wait for the disk, cursor moves written later, checkpoints in the background, and
two queues (as two processes would) on one file."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import zlib
from datetime import timedelta
from pathlib import Path

import msgspec
import pytest
from tests.delivery.queue_support import ACME, new_delivery
from tests.storage.engine_support import commits, statements
from tests.storage.eventlog_support import ACME_DEFAULT, T0, MovableClock

from stellwerk.clock import to_us
from stellwerk.refs import BusRef, TenantName
from stellwerk.seams import Attempt, CursorConflict, LeasedDelivery
from stellwerk.storage.queue.sqlite import SqliteDeliveryQueue
from stellwerk.storage.sqlite import PIPELINE_FILE

LEASE = 30.0


async def test_leases_are_forgotten_on_reopen_and_never_written(tmp_path: Path) -> None:
    path = tmp_path / PIPELINE_FILE
    async with SqliteDeliveryQueue(path, clock=MovableClock()) as queue:
        await queue.route(ACME_DEFAULT, 2, [new_delivery(1), new_delivery(2)])
        leased = await queue.lease(T0, 10, LEASE)
        assert [d.position for d in leased] == [1, 2]
        # Within the process the leases hold until they expire.
        assert await queue.lease(T0 + timedelta(seconds=LEASE - 1), 10, LEASE) == []
        (depth,) = await queue.depth()
        assert (depth.pending, depth.in_flight) == (0, 2)
    # After a restart the deliveries of the worker that held them are due at once, unattempted.
    async with SqliteDeliveryQueue(path, clock=MovableClock()) as queue:
        again = await queue.lease(T0, 10, LEASE)
        assert [(d.id, d.attempts) for d in again] == [(d.id, 0) for d in leased]


async def test_release_and_outcomes_end_the_lease(tmp_path: Path) -> None:
    async with SqliteDeliveryQueue(tmp_path / PIPELINE_FILE, clock=MovableClock()) as queue:
        await queue.route(ACME_DEFAULT, 3, [new_delivery(n) for n in (1, 2, 3)])
        one, two, three = await queue.lease(T0, 10, LEASE)
        await queue.release([one.id])
        await queue.retry(two.id, T0 + timedelta(seconds=5), "HTTP 503")
        await queue.dead_letter(three.id, "HTTP 410")
        (depth,) = await queue.depth()
        assert (depth.pending, depth.in_flight, depth.dead) == (2, 0, 1)
        assert [d.id for d in await queue.lease(T0, 10, LEASE)] == [one.id]
        later = await queue.lease(T0 + timedelta(seconds=5), 10, LEASE)
        assert [(d.id, d.attempts) for d in later] == [(two.id, 1)]


async def test_a_payload_shared_by_deliveries_is_stored_once_until_the_last_is_done(
    tmp_path: Path,
) -> None:
    path = tmp_path / PIPELINE_FILE
    body = b'{"specversion":"1.0","id":"e1","data":"' + b"x" * 2000 + b'"}'
    shared = [
        msgspec.structs.replace(new_delivery(1, target_id=f"t{n}"), payload=body) for n in range(3)
    ]
    small = new_delivery(1, target_id="small")  # too small to be worth sharing
    async with SqliteDeliveryQueue(path, clock=MovableClock()) as queue:
        await queue.route(ACME_DEFAULT, 1, [*shared, small])
        assert _bodies(path) == [body]
        leased = {d.target_id: d for d in await queue.lease(T0, 10, LEASE)}
        assert [leased[f"t{n}"].payload for n in range(3)] == [body] * 3
        assert leased["small"].payload == small.payload
        await queue.dead_letter(leased["t0"].id, "HTTP 410")
        await queue.ack(leased["t1"].id)
        await queue.ack(leased["t2"].id)
        await queue.ack(leased["small"].id)
        # The dead delivery still holds the body: dead letters and redrive show the payload.
        assert _bodies(path) == [body]
        (dead,) = await queue.dead_letters(ACME_DEFAULT)
        assert dead.payload == body
        assert await queue.redrive(ACME_DEFAULT) == 1
        (again,) = await queue.lease(T0, 10, LEASE)
        assert again.payload == body
        await queue.ack(again.id)
        assert _bodies(path) == []


def _bodies(path: Path) -> list[bytes]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return [bytes(p) for (p,) in conn.execute("SELECT payload FROM bodies")]


async def test_ids_are_not_reused_after_the_newest_delivery_is_acked(tmp_path: Path) -> None:
    # SQLite reuses the highest rowid once its row is gone; a worker still settling the old
    # delivery would then skip the new one as its own, and it would wait out a whole lease.
    async with SqliteDeliveryQueue(tmp_path / PIPELINE_FILE, clock=MovableClock()) as queue:
        await queue.route(ACME_DEFAULT, 1, [new_delivery(1)])
        (first,) = await queue.lease(T0, 10, LEASE)
        await queue.ack(first.id)
        await queue.route(ACME_DEFAULT, 2, [new_delivery(2)])
        (second,) = await queue.lease(T0, 10, LEASE)
        assert second.position == 2
        assert second.id > first.id


async def test_only_redrives_and_erasures_wait_for_the_disk(tmp_path: Path) -> None:
    """A route, its acks and retries can be made again from the log after a power failure
    (and lost together with their cursor); a redrive or an erasure an operator was told about
    cannot: only those commit with `synchronous=FULL`."""
    async with SqliteDeliveryQueue(tmp_path / PIPELINE_FILE, clock=MovableClock()) as queue:
        with statements(queue.engine) as seen:
            await queue.route(ACME_DEFAULT, 3, [new_delivery(n) for n in (1, 2, 3)])
            one, two, three = await queue.lease(T0, 10, LEASE)
            await queue.ack(one.id)
            await queue.retry(two.id, T0, "HTTP 503")
            await queue.dead_letter(three.id, "HTTP 410")
            await queue.route_replay(TenantName("acme"), "r", 1, 1, [new_delivery(4)], after=0)
            await queue.redrive(ACME_DEFAULT)
            await queue.erase(TenantName("acme"), None, {("default", 2)}, b"x", lambda p, c: False)

    modes = [mode for mode, _ in commits(seen)]
    assert modes == ["NORMAL"] * 5 + ["FULL"] * 2


async def test_a_run_without_deliveries_moves_the_cursor_with_a_later_commit(
    tmp_path: Path,
) -> None:
    async with SqliteDeliveryQueue(tmp_path / PIPELINE_FILE, clock=MovableClock()) as queue:
        with statements(queue.engine) as seen:
            await queue.route(BusRef(TenantName("acme"), "quiet"), 7, [])
            await queue.route(BusRef(TenantName("acme"), "quiet"), 9, [])
            assert commits(seen) == []  # a page written per run cost more than the events
            assert await queue.cursor(BusRef(TenantName("acme"), "quiet")) == 9
            with pytest.raises(CursorConflict):
                await queue.route(BusRef(TenantName("acme"), "quiet"), 9, [])
            await queue.route(BusRef(TenantName("acme"), "busy"), 1, [new_delivery(1, bus="busy")])
        ((_, body),) = commits(seen)
        assert [s for s in body if "INTO cursors" in s] == [
            "INSERT INTO cursors (tenant, bus, position) VALUES ('acme', 'busy', 1)"
            " ON CONFLICT (tenant, bus) DO UPDATE SET position = excluded.position"
            " WHERE excluded.position > cursors.position",
            "INSERT INTO cursors (tenant, bus, position) VALUES ('acme', 'quiet', 9)"
            " ON CONFLICT (tenant, bus) DO UPDATE SET position = excluded.position"
            " WHERE excluded.position > cursors.position",
        ]
    with sqlite3.connect(tmp_path / PIPELINE_FILE) as conn:
        stored = conn.execute("SELECT bus, position FROM cursors ORDER BY bus").fetchall()
    assert stored == [("busy", 1), ("quiet", 9)]


async def test_reading_a_cursor_puts_what_it_reads_on_disk(tmp_path: Path) -> None:
    # Retention trims the log below the cursor: a cursor that a power failure could take back
    # would leave deliveries to be made from events no longer there.
    async with SqliteDeliveryQueue(tmp_path / PIPELINE_FILE, clock=MovableClock()) as queue:
        await queue.route(ACME_DEFAULT, 1, [new_delivery(1)])
        assert queue.engine.syncs == 0
        assert await queue.cursor(ACME_DEFAULT) == 1
        assert queue.engine.syncs == 1


async def test_two_queues_on_one_file_see_what_the_other_wrote(tmp_path: Path) -> None:
    """As the gateway (dead letters, redrive) and the pipeline (routing, delivery) processes
    would: each queue has its own engine and its own memory of the file."""
    path = tmp_path / PIPELINE_FILE
    woken: list[str] = []
    async with (
        SqliteDeliveryQueue(path, clock=MovableClock()) as pipeline,
        SqliteDeliveryQueue(path, clock=MovableClock()) as gateway,
    ):
        pipeline.watch_lanes(lambda: woken.append("woken"))
        await pipeline.route(ACME_DEFAULT, 1, [new_delivery(1)])
        (first,) = await pipeline.lease(T0, 10, LEASE)
        await pipeline.dead_letter(first.id, "HTTP 410")
        assert await pipeline.lease(T0, 10, LEASE) == []

        assert [d.id for d in await gateway.dead_letters(ACME_DEFAULT)] == [first.id]
        assert await gateway.redrive(ACME_DEFAULT) == 1
        # The pipeline's next lease notices the gateway's commit and reads the file again.
        (again,) = await pipeline.lease(T0, 10, LEASE)
        assert (again.id, again.attempts) == (first.id, 0)
        assert woken == ["woken"]

        # Routed by the other one: new targets and ids this queue never handed out.
        await gateway.route(
            BusRef(TenantName("acme"), "other"), 5, [new_delivery(5, bus="other", target_id="t9")]
        )
        await pipeline.route(ACME_DEFAULT, 2, [new_delivery(2)])
        leased = await pipeline.lease(T0, 10, LEASE)
        assert sorted((d.bus, d.position, d.target_id) for d in leased) == [
            ("default", 2, "t1"),
            ("other", 5, "t9"),
        ]
        assert len({d.id for d in [again, *leased]}) == 3
        assert await gateway.cursor(ACME_DEFAULT) == 2
        assert await pipeline.cursor(BusRef(TenantName("acme"), "other")) == 5


async def test_the_wal_is_folded_into_the_file_in_the_background(tmp_path: Path) -> None:
    path = tmp_path / PIPELINE_FILE
    async with SqliteDeliveryQueue(path, clock=MovableClock()) as queue:
        empty = path.stat().st_size
        payload = b"x" * 2000
        for position in range(1, 201):
            delivery = msgspec.structs.replace(new_delivery(position), payload=payload)
            await queue.route(ACME_DEFAULT, position, [delivery])
        # The writer never checkpoints by itself below the bound: only the checkpointer thread
        # can have grown the database file while the queue is open.
        deadline = asyncio.get_running_loop().time() + 10
        while path.stat().st_size <= empty + 200 * 2000:
            assert asyncio.get_running_loop().time() < deadline, "no checkpoint ran"
            await asyncio.sleep(0.02)


T0_US = to_us(T0)


def _delivered(d: LeasedDelivery) -> Attempt:
    return Attempt(
        d.tenant, d.bus, d.rule, d.target_id, d.event_id, d.position, d.attempts + 1, T0_US, 10,
        "delivered",
    )  # fmt: skip


async def test_an_events_attempts_are_found_across_groups_and_in_an_older_file(
    tmp_path: Path,
) -> None:
    """Attempts are stored a group per write (docs/delivery-history.md): an event attempted
    again in a later group is found in both; a file with the former table of one row per
    attempt is converted on opening, its ids kept, and new ids follow them."""
    path = tmp_path / PIPELINE_FILE
    async with SqliteDeliveryQueue(path) as queue:
        await queue.route(ACME_DEFAULT, 1, [new_delivery(1)])
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        # As the file was before: one row per attempt, ids with gaps.
        conn.execute(
            "CREATE TABLE attempts (id INTEGER PRIMARY KEY, target INTEGER NOT NULL,"
            " event_id TEXT NOT NULL, event_key INTEGER NOT NULL DEFAULT 0,"
            " position INTEGER NOT NULL, attempt INTEGER NOT NULL, started_us INTEGER NOT NULL,"
            " duration_us INTEGER NOT NULL, outcome INTEGER NOT NULL, status INTEGER,"
            " error TEXT, excerpt TEXT NOT NULL DEFAULT '')"
        )
        conn.executemany(
            "INSERT INTO attempts (id, target, event_id, position, attempt, started_us,"
            " duration_us, outcome, status, error) VALUES (?, 1, ?, ?, 1, 0, 0, ?, ?, ?)",
            [(1, "e1", 1, 1, 503, "busy"), (7, "x", 5, 0, 200, None),
             (12345, "other", 9, 0, None, None)],
        )  # fmt: skip
    async with SqliteDeliveryQueue(path) as queue:
        (again,) = await queue.lease(T0, 1, 30)
        await queue.ack_many([again.id], [_delivered(again)])
        found = await queue.event_attempts(ACME_DEFAULT, "e1")
        assert [(r.id, r.attempt.outcome, r.attempt.status, r.attempt.error) for r in found] == [
            (1, "retrying", 503, "busy"),
            (12346, "delivered", None, None),
        ]
        (other,) = await queue.event_attempts(ACME_DEFAULT, "other")
        assert (other.id, other.attempt.position) == (12345, 9)
        page = await queue.target_attempts(ACME_DEFAULT, "r1", "t1", after=1, limit=2)
        assert [r.id for r in page] == [7, 12345]
    with contextlib.closing(sqlite3.connect(path)) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert "attempts" not in tables
        assert conn.execute("SELECT id, count FROM attempt_groups ORDER BY id").fetchall() == [
            (1, 7), (12345, 1), (12346, 1),
        ]  # fmt: skip


async def test_a_group_written_with_whole_start_times_is_read_as_before(tmp_path: Path) -> None:
    """Groups keep their attempts' starts relative to the first since history5; a group of
    the layout before (whole starts, no base) reads back the same, and erasing in it works."""
    path = tmp_path / PIPELINE_FILE
    async with SqliteDeliveryQueue(path) as queue:
        await queue.route(ACME_DEFAULT, 2, [new_delivery(1), new_delivery(2)])
        first, _ = await queue.lease(T0, 2, 30)
        await queue.ack_many([first.id], [_delivered(first)])
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        (target,) = conn.execute("SELECT target FROM targets").fetchone()
        old = [[target, "e2", 2, 1, T0_US + 5, 10, 0, 200, None, "ok"]]
        conn.execute(
            "INSERT INTO attempt_groups (id, count, started_min_us, started_max_us, outcomes,"
            " body) VALUES (2, 1, ?, ?, 1, ?)",
            (T0_US + 5, T0_US + 5, msgspec.msgpack.encode(old)),
        )
        crc = zlib.crc32(b"e2").to_bytes(4, "big")
        conn.execute("INSERT INTO attempt_crcs (id, crcs) VALUES (2, ?)", (crc,))
        conn.execute("INSERT INTO attempt_group_targets VALUES (?, 2)", (target,))
    async with SqliteDeliveryQueue(path) as queue:
        (mine,) = await queue.event_attempts(ACME_DEFAULT, "e1")
        assert (mine.id, mine.attempt.started) == (1, T0)
        (before,) = await queue.event_attempts(ACME_DEFAULT, "e2")
        assert (before.id, before.attempt.started_us, before.attempt.excerpt) == (
            2, T0_US + 5, "ok",
        )  # fmt: skip
        since = T0 + timedelta(microseconds=1)
        page = await queue.target_attempts(ACME_DEFAULT, "r1", "t1", since=since)
        assert [r.id for r in page] == [2]
        erased = await queue.erase(ACME, "default", {("default", 2)}, b"", lambda p, c: False)
        assert erased.attempts == 1
        assert await queue.event_attempts(ACME_DEFAULT, "e2") == []
        assert len(await queue.event_attempts(ACME_DEFAULT, "e1")) == 1

"""What the embedded queue does beyond the shared contract: leases in memory, shared bodies,
unsynced replay batches, checkpoints in the background."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from datetime import timedelta
from pathlib import Path

import msgspec
from tests.delivery.queue_support import new_delivery
from tests.storage.eventlog_support import T0, MovableClock

from stellwerk.storage.queue.sqlite import SqliteDeliveryQueue
from stellwerk.storage.sqlite import DELIVERIES_FILE

LEASE = 30.0


async def test_leases_are_forgotten_on_reopen_and_never_written(tmp_path: Path) -> None:
    path = tmp_path / DELIVERIES_FILE
    async with SqliteDeliveryQueue(path, clock=MovableClock()) as queue:
        await queue.route("acme", "default", 2, [new_delivery(1), new_delivery(2)])
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
    async with SqliteDeliveryQueue(tmp_path / DELIVERIES_FILE, clock=MovableClock()) as queue:
        await queue.route("acme", "default", 3, [new_delivery(n) for n in (1, 2, 3)])
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
    path = tmp_path / DELIVERIES_FILE
    body = b'{"specversion":"1.0","id":"e1","data":"' + b"x" * 200 + b'"}'
    shared = [
        msgspec.structs.replace(new_delivery(1, target_id=f"t{n}"), payload=body) for n in range(3)
    ]
    small = new_delivery(1, target_id="small")  # too small to be worth sharing
    async with SqliteDeliveryQueue(path, clock=MovableClock()) as queue:
        await queue.route("acme", "default", 1, [*shared, small])
        assert _bodies(path) == [(body, 3)]
        leased = {d.target_id: d for d in await queue.lease(T0, 10, LEASE)}
        assert [leased[f"t{n}"].payload for n in range(3)] == [body] * 3
        assert leased["small"].payload == small.payload
        await queue.dead_letter(leased["t0"].id, "HTTP 410")
        await queue.ack(leased["t1"].id)
        await queue.ack(leased["t2"].id)
        await queue.ack(leased["small"].id)
        # The dead delivery still holds the body: dead letters and redrive show the payload.
        assert _bodies(path) == [(body, 1)]
        (dead,) = await queue.dead_letters("acme", "default")
        assert dead.payload == body
        assert await queue.redrive("acme", "default") == 1
        (again,) = await queue.lease(T0, 10, LEASE)
        assert again.payload == body
        await queue.ack(again.id)
        assert _bodies(path) == []


def _bodies(path: Path) -> list[tuple[bytes, int]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return [(bytes(p), r) for p, r in conn.execute("SELECT payload, refs FROM bodies")]


async def test_ids_are_not_reused_after_the_newest_delivery_is_acked(tmp_path: Path) -> None:
    # SQLite reuses the highest rowid once its row is gone; a worker still settling the old
    # delivery would then skip the new one as its own, and it would wait out a whole lease.
    async with SqliteDeliveryQueue(tmp_path / DELIVERIES_FILE, clock=MovableClock()) as queue:
        await queue.route("acme", "default", 1, [new_delivery(1)])
        (first,) = await queue.lease(T0, 10, LEASE)
        await queue.ack(first.id)
        await queue.route("acme", "default", 2, [new_delivery(2)])
        (second,) = await queue.lease(T0, 10, LEASE)
        assert second.position == 2
        assert second.id > first.id


async def test_only_replay_batches_commit_without_an_fsync(tmp_path: Path) -> None:
    """`synchronous` is NORMAL for a transaction of nothing but replay batches (a batch lost to
    a power failure goes with its cursor move and is replayed again) and FULL for every other:
    told by tracing the writer's statements."""
    async with SqliteDeliveryQueue(tmp_path / DELIVERIES_FILE, clock=MovableClock()) as queue:
        statements: list[str] = []
        writer = queue._write_conn  # the trace is the only witness of a pragma
        assert writer is not None
        writer.set_trace_callback(statements.append)
        await queue.route_replay("acme", "r", 1, 1, [new_delivery(1)], after=0)
        await queue.route("acme", "default", 2, [new_delivery(2)])
        await queue.route_replay("acme", "r", 2, 1, [new_delivery(3)], after=1)
        await asyncio.gather(
            queue.route_replay("acme", "r", 3, 1, [new_delivery(4)], after=2),
            queue.route("acme", "default", 5, [new_delivery(5)]),
        )
        writer.set_trace_callback(None)

    modes, mode, kinds = [], "FULL", set()
    for statement in statements:
        if statement.startswith("PRAGMA synchronous"):
            mode = statement.rpartition(" ")[2]
        elif "INTO replay_cursors" in statement:
            kinds.add("replay")
        elif "INTO cursors" in statement:
            kinds.add("route")
        elif statement == "COMMIT" and kinds:
            modes.append((frozenset(kinds), mode))
            kinds = set()
    replay, route = frozenset({"replay"}), frozenset({"route"})
    assert modes[:3] == [(replay, "NORMAL"), (route, "FULL"), (replay, "NORMAL")]
    # The last two ran together or one after the other: a live route is synced either way.
    assert all(m == "FULL" for k, m in modes[3:] if "route" in k)
    assert sum(len(k) for k, _ in modes[3:]) >= 2


async def test_the_wal_is_folded_into_the_file_in_the_background(tmp_path: Path) -> None:
    path = tmp_path / DELIVERIES_FILE
    async with SqliteDeliveryQueue(path, clock=MovableClock()) as queue:
        empty = path.stat().st_size
        payload = b"x" * 2000
        for position in range(1, 201):
            delivery = msgspec.structs.replace(new_delivery(position), payload=payload)
            await queue.route("acme", "default", position, [delivery])
        # The writer never checkpoints by itself below the bound: only the checkpointer thread
        # can have grown the database file while the queue is open.
        deadline = asyncio.get_running_loop().time() + 10
        while path.stat().st_size <= empty + 200 * 2000:
            assert asyncio.get_running_loop().time() < deadline, "no checkpoint ran"
            await asyncio.sleep(0.02)

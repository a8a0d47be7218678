"""What the embedded queue does beyond the shared contract: leases in memory, shared bodies."""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import timedelta
from pathlib import Path

import msgspec
from tests.delivery.queue_support import new_delivery
from tests.storage.eventlog_support import T0, MovableClock

from stellwerk.storage.sqlite.deliveries import DELIVERIES_FILE, SqliteDeliveryQueue

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

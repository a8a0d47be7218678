"""What the embedded queue does beyond the shared contract: leases kept in memory only."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

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

"""A target's concurrency slots: at most `count` held, waiters served in order, none lost."""

from __future__ import annotations

import asyncio

from stellwerk.delivery.targets.slots import Slots


async def test_no_more_than_count_are_held_and_waiters_go_in_order() -> None:
    slots = Slots(2)
    order: list[int] = []
    release = asyncio.Event()

    async def hold(n: int) -> None:
        await slots.take()
        order.append(n)
        await release.wait()
        slots.give()

    tasks = [asyncio.create_task(hold(n)) for n in range(5)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert order == [0, 1]
    release.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert order == [0, 1, 2, 3, 4]
    assert slots.free == 2
    assert not slots.waiters


async def test_a_waiter_cancelled_as_it_is_handed_a_slot_passes_it_on() -> None:
    slots = Slots(1)
    await slots.take()
    first = asyncio.create_task(slots.take())
    second = asyncio.create_task(slots.take())
    await asyncio.sleep(0)
    slots.give()  # hands the slot to `first`...
    first.cancel()  # ...which is cancelled before it runs: the slot must reach `second`
    await asyncio.wait_for(second, 10)
    assert first.cancelled()
    slots.give()
    assert slots.free == 1


async def test_a_cancelled_waiter_leaves_no_trace() -> None:
    slots = Slots(1)
    await slots.take()
    waiting = asyncio.create_task(slots.take())
    await asyncio.sleep(0)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    assert not slots.waiters
    slots.give()
    assert slots.free == 1

"""Waiting for appends to a bus: a waiter that armed itself before it read wakes for an append
that came during its read, instead of sleeping through it until its timeout."""

from __future__ import annotations

import time

from stellwerk.refs import BusRef, TenantName
from stellwerk.storage import LogWatch

ORDERS = BusRef(TenantName("acme"), "orders")


async def test_an_append_during_the_read_wakes_the_waiter_armed_before_it() -> None:
    watch = LogWatch()
    appended = watch.armed(ORDERS)
    watch.appended(ORDERS)  # lands while the waiter reads the log
    started = time.monotonic()
    assert await watch.wait(ORDERS, 30, armed=appended)
    assert time.monotonic() - started < 1


async def test_an_append_to_another_bus_wakes_no_one_and_the_wait_times_out() -> None:
    watch = LogWatch()
    appended = watch.armed(ORDERS)
    watch.appended(BusRef(TenantName("acme"), "audit"))
    assert not await watch.wait(ORDERS, 0.05, armed=appended)

"""Trimming with positions to keep: retention never takes events a router or archiver still needs.

Part of the event log contract (parametrised by backend like `test_eventlog_contract.py`).
"""

from __future__ import annotations

from datetime import timedelta

from tests.storage.eventlog_support import ACME_DEFAULT, T0, MovableClock, new_event

from stellwerk.refs import BusRef, TenantName
from stellwerk.seams import EventLog


async def test_trim_keeps_a_bus_events_above_its_keep_position_however_old(
    event_log: EventLog, clock: MovableClock
) -> None:
    routed = await event_log.append([new_event(f"a{i}") for i in range(3)])
    other = await event_log.append([new_event(f"b{i}", bus="audit") for i in range(3)])
    unrouted = await event_log.append([new_event(f"a{i}") for i in range(3, 6)])
    clock.advance(timedelta(days=2))
    await event_log.append([new_event("fresh")])

    removed = await event_log.trim(T0 + timedelta(days=1), keep={ACME_DEFAULT: routed[-1].position})

    assert removed == len(routed) + len(other)
    left = await event_log.read(ACME_DEFAULT)
    assert [e.id for e in left] == ["a3", "a4", "a5", "fresh"]
    assert [e.position for e in left[:3]] == [r.position for r in unrouted]
    assert await event_log.read(BusRef(TenantName("acme"), "audit")) == []
    # Time windows still find the kept events.
    window = await event_log.read_window(ACME_DEFAULT, T0, T0 + timedelta(hours=1))
    assert [e.id for e in window] == ["a3", "a4", "a5"]

    # Once the router has moved past them, they go too.
    assert await event_log.trim(
        T0 + timedelta(days=1), keep={ACME_DEFAULT: unrouted[-1].position}
    ) == len(unrouted)
    assert [e.id for e in await event_log.read(ACME_DEFAULT)] == ["fresh"]


async def test_keep_positions_of_unknown_buses_change_nothing(
    event_log: EventLog, clock: MovableClock
) -> None:
    await event_log.append([new_event("old")])
    clock.advance(timedelta(days=2))

    removed = await event_log.trim(
        T0 + timedelta(days=1), keep={BusRef(TenantName("acme"), "nowhere"): 0}
    )

    assert removed == 1
    assert await event_log.read(ACME_DEFAULT) == []

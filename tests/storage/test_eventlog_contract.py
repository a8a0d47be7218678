"""The event log contract: every backend must pass these (see eventlog_support.BACKENDS)."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.storage.eventlog_support import T0, LogFactory, MovableClock, body_of, new_event

from stellwerk.events import parse_rfc3339
from stellwerk.storage.eventlog import AppendStatus, EventLog, LogClosed


async def test_appended_events_read_back_in_order_with_growing_positions(
    event_log: EventLog,
) -> None:
    results = await event_log.append([new_event(f"e{i}") for i in range(5)])

    assert [r.status for r in results] == [AppendStatus.STORED] * 5
    positions = [r.position for r in results]
    assert positions == sorted(positions)
    assert len(set(positions)) == 5
    stored = await event_log.read("acme", "default")
    assert [e.id for e in stored] == [f"e{i}" for i in range(5)]
    assert [e.position for e in stored] == positions
    assert all(e.tenant == "acme" and e.bus == "default" for e in stored)


async def test_stored_body_is_the_event_with_stellwerk_extensions(
    event_log: EventLog, clock: MovableClock
) -> None:
    appended = new_event("e1", subject="order-7", extensions={"traceparent": "00-ab", "n": 3})
    await event_log.append([appended])

    (stored,) = await event_log.read("acme", "default")
    body = body_of(stored.body)
    assert body["id"] == "e1"
    assert body["subject"] == "order-7"
    assert body["traceparent"] == "00-ab"
    assert body["n"] == 3
    assert body["data"] == {"n": "e1"}
    assert body["tenant"] == "acme"
    assert body["bus"] == "default"
    assert parse_rfc3339(str(body["recordedtime"])) == stored.recorded_time == clock.now
    assert (stored.source, stored.type, stored.subject) == ("/orders", "order.created", "order-7")


async def test_extensions_in_the_body_cannot_claim_another_tenant_or_bus(
    event_log: EventLog,
) -> None:
    forged = new_event("e1", extensions={"tenant": "other", "bus": "secret"})
    await event_log.append([forged])

    (stored,) = await event_log.read("acme", "default")
    body = body_of(stored.body)
    assert (body["tenant"], body["bus"]) == ("acme", "default")


async def test_read_pages_with_after_and_limit(event_log: EventLog) -> None:
    await event_log.append([new_event(f"e{i}") for i in range(10)])

    first = await event_log.read("acme", "default", after=0, limit=4)
    second = await event_log.read("acme", "default", after=first[-1].position, limit=4)
    third = await event_log.read("acme", "default", after=second[-1].position, limit=4)
    rest = await event_log.read("acme", "default", after=third[-1].position, limit=4)

    assert [e.id for e in first + second + third] == [f"e{i}" for i in range(10)]
    assert (len(first), len(second), len(third), rest) == (4, 4, 2, [])


async def test_buses_and_tenants_are_separate(event_log: EventLog) -> None:
    await event_log.append(
        [
            new_event("same", tenant="acme", bus="default"),
            new_event("same", tenant="acme", bus="audit"),
            new_event("same", tenant="globex", bus="default"),
        ]
    )

    for tenant, bus in [("acme", "default"), ("acme", "audit"), ("globex", "default")]:
        stored = await event_log.read(tenant, bus)
        assert [(e.tenant, e.bus, e.id) for e in stored] == [(tenant, bus, "same")]
        assert body_of(stored[0].body)["bus"] == bus
    assert await event_log.read("globex", "audit") == []


async def test_last_position_follows_each_bus(event_log: EventLog) -> None:
    assert await event_log.last_position("acme", "default") == 0
    a = await event_log.append([new_event("a1"), new_event("a2")])
    b = await event_log.append([new_event("b1", bus="audit")])

    assert await event_log.last_position("acme", "default") == a[1].position
    assert await event_log.last_position("acme", "audit") == b[0].position
    assert await event_log.last_position("acme", "nothing") == 0


async def test_same_id_and_source_on_a_bus_is_stored_once(event_log: EventLog) -> None:
    (first,) = await event_log.append([new_event("e1")])
    again = await event_log.append([new_event("e1"), new_event("e1", source="/other")])

    assert again[0].status is AppendStatus.DUPLICATE
    assert again[0].position == first.position
    assert again[1].status is AppendStatus.STORED
    assert [(e.id, e.source) for e in await event_log.read("acme", "default")] == [
        ("e1", "/orders"),
        ("e1", "/other"),
    ]


async def test_duplicates_within_one_batch_and_across_concurrent_appends(
    event_log: EventLog,
) -> None:
    (batch, *concurrent) = await asyncio.gather(
        event_log.append([new_event("x"), new_event("x"), new_event("y")]),
        *(event_log.append([new_event("z")]) for _ in range(5)),
    )

    assert [r.status for r in batch] == [
        AppendStatus.STORED,
        AppendStatus.DUPLICATE,
        AppendStatus.STORED,
    ]
    assert batch[1].position == batch[0].position
    assert sum(r[0].status is AppendStatus.STORED for r in concurrent) == 1
    assert len({r[0].position for r in concurrent}) == 1
    assert sorted(e.id for e in await event_log.read("acme", "default")) == ["x", "y", "z"]


async def test_dedup_window_ends(log_factory: LogFactory, clock: MovableClock) -> None:
    window = timedelta(hours=2)
    async with log_factory(dedup_window=window) as log:
        (first,) = await log.append([new_event("e1")])
        clock.advance(window - timedelta(microseconds=1))
        (inside,) = await log.append([new_event("e1")])
        clock.advance(timedelta(microseconds=1))
        (after,) = await log.append([new_event("e1")])
        (again,) = await log.append([new_event("e1")])

    assert inside.status is AppendStatus.DUPLICATE
    assert inside.position == first.position
    assert after.status is AppendStatus.STORED
    assert after.position > first.position
    assert again.status is AppendStatus.DUPLICATE
    assert again.position == after.position


async def test_read_window_selects_by_recorded_time(
    event_log: EventLog, clock: MovableClock
) -> None:
    for hour in range(4):
        await event_log.append([new_event(f"h{hour}a"), new_event(f"h{hour}b")])
        clock.advance(timedelta(hours=1))

    window = await event_log.read_window(
        "acme", "default", T0 + timedelta(minutes=30), T0 + timedelta(hours=3)
    )
    assert [e.id for e in window] == ["h1a", "h1b", "h2a", "h2b"]

    page = await event_log.read_window(
        "acme", "default", T0 + timedelta(minutes=30), T0 + timedelta(hours=3), limit=3
    )
    rest = await event_log.read_window(
        "acme",
        "default",
        T0 + timedelta(minutes=30),
        T0 + timedelta(hours=3),
        after=page[-1].position,
    )
    assert [e.id for e in page + rest] == [e.id for e in window]
    exact = await event_log.read_window("acme", "default", T0, T0 + timedelta(hours=1))
    assert [e.id for e in exact] == ["h0a", "h0b"]
    assert await event_log.read_window("acme", "default", T0 + timedelta(days=1), T0) == []
    assert await event_log.read_window("acme", "other", T0, T0 + timedelta(days=1)) == []


async def test_trim_removes_only_older_events_and_keeps_positions_growing(
    event_log: EventLog, clock: MovableClock
) -> None:
    old = await event_log.append([new_event("old1"), new_event("old2", bus="audit")])
    clock.advance(timedelta(days=2))
    await event_log.append([new_event("new1")])

    removed = await event_log.trim(T0 + timedelta(days=1))

    assert removed == 2
    assert [e.id for e in await event_log.read("acme", "default")] == ["new1"]
    assert await event_log.read("acme", "audit") == []
    assert await event_log.last_position("acme", "audit") == old[1].position
    assert await event_log.trim(T0 + timedelta(days=1)) == 0

    assert await event_log.trim(T0 + timedelta(days=3)) == 1
    assert await event_log.read("acme", "default") == []
    (later,) = await event_log.append([new_event("later")])
    assert later.position > old[1].position


async def test_recorded_time_never_goes_back_when_the_clock_does(
    event_log: EventLog, clock: MovableClock
) -> None:
    await event_log.append([new_event("e1")])
    clock.advance(-timedelta(minutes=5))
    await event_log.append([new_event("e2")])

    first, second = await event_log.read("acme", "default")
    assert second.recorded_time >= first.recorded_time


async def test_events_and_dedup_survive_reopening(
    log_factory: LogFactory, clock: MovableClock
) -> None:
    async with log_factory() as log:
        stored = await log.append([new_event(f"e{i}") for i in range(3)])
    async with log_factory() as log:
        assert [e.id for e in await log.read("acme", "default")] == ["e0", "e1", "e2"]
        (repeat,) = await log.append([new_event("e1")])
        (fresh,) = await log.append([new_event("e3")])
        assert await log.last_position("acme", "default") == fresh.position

    assert repeat.status is AppendStatus.DUPLICATE
    assert repeat.position == stored[1].position
    assert fresh.position > stored[-1].position


async def test_empty_append_is_a_no_op(event_log: EventLog) -> None:
    assert await event_log.append([]) == []
    assert await event_log.read("acme", "default") == []


async def test_a_closed_log_says_so(log_factory: LogFactory) -> None:
    log = log_factory()
    with pytest.raises(LogClosed):
        await log.append([new_event("e1")])
    async with log:
        await log.ping()
    with pytest.raises(LogClosed):
        await log.append([new_event("e1")])
    with pytest.raises(LogClosed):
        await log.read("acme", "default")
    with pytest.raises(LogClosed):
        await log.ping()


_keys = st.tuples(
    st.sampled_from(["default", "audit"]), st.sampled_from(["/a", "/b"]), st.sampled_from("uvwxyz")
)
_steps = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.lists(_keys, min_size=1, max_size=6)),
        st.tuples(st.just("advance"), st.sampled_from([0, 1, 30, 59, 60])),
    ),
    max_size=12,
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=_steps)
async def test_dedup_and_positions_match_a_model(
    log_factory: LogFactory, steps: list[tuple[str, Any]]
) -> None:
    clock = MovableClock()
    factory = replace(log_factory, data_dir=log_factory.data_dir / uuid.uuid4().hex, clock=clock)
    window = timedelta(hours=1)
    first_seen: dict[tuple[str, str, str], tuple[datetime, int]] = {}
    model: list[tuple[str, str, str, int]] = []
    last_position = 0
    async with factory(dedup_window=window) as log:
        for kind, arg in steps:
            if kind == "advance":
                clock.advance(timedelta(minutes=arg))
                continue
            batch = [new_event(event_id, bus=bus, source=source) for bus, source, event_id in arg]
            results = await log.append(batch)
            for key, result in zip(arg, results, strict=True):
                seen = first_seen.get(key)
                if seen is not None and clock.now - seen[0] < window:
                    assert result.status is AppendStatus.DUPLICATE
                    assert result.position == seen[1]
                else:
                    assert result.status is AppendStatus.STORED
                    assert result.position > last_position
                    last_position = result.position
                    first_seen[key] = (clock.now, result.position)
                    model.append((*key, result.position))
        stored = [
            (e.bus, e.source, e.id, e.position)
            for bus in ("default", "audit")
            for e in await log.read("acme", bus)
        ]
    assert sorted(stored, key=lambda row: row[3]) == model


async def test_trimming_does_not_shorten_the_dedup_window(
    log_factory: LogFactory, clock: MovableClock
) -> None:
    async with log_factory(dedup_window=timedelta(hours=1)) as log:
        (first,) = await log.append([new_event("e1")])
        clock.advance(timedelta(minutes=10))
        await log.append([new_event("e2")])
        assert await log.trim(clock.now) == 1
        await log.append([new_event("e3")])  # lets housekeeping after a group run
        (again,) = await log.append([new_event("e1")])

    assert again.status is AppendStatus.DUPLICATE
    assert again.position == first.position


async def test_reads_are_always_bounded(event_log: EventLog) -> None:
    for limit in (0, -1):
        with pytest.raises(ValueError, match="limit"):
            await event_log.read("acme", "default", limit=limit)
        with pytest.raises(ValueError, match="limit"):
            await event_log.read_window("acme", "default", T0, T0, limit=limit)

"""The event log contract: every backend must pass these (see eventlog_support.BACKENDS)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.storage.eventlog_support import (
    ACME_DEFAULT,
    T0,
    LogFactory,
    MovableClock,
    body_of,
    new_event,
)

from stellwerk.events import parse_rfc3339
from stellwerk.refs import BusRef, TenantName
from stellwerk.seams import AppendStatus, ErasedEvent, EventLog, LogClosed, NewEvent, StoredEvent


async def test_appended_events_read_back_in_order_with_growing_positions(
    event_log: EventLog,
) -> None:
    results = await event_log.append([new_event(f"e{i}") for i in range(5)])

    assert [r.status for r in results] == [AppendStatus.STORED] * 5
    positions = [r.position for r in results]
    assert positions == sorted(positions)
    assert len(set(positions)) == 5
    stored = await event_log.read(ACME_DEFAULT)
    assert [e.id for e in stored] == [f"e{i}" for i in range(5)]
    assert [e.position for e in stored] == positions
    assert all(e.tenant == "acme" and e.bus == "default" for e in stored)


async def test_stored_body_is_the_event_with_stellwerk_extensions(
    event_log: EventLog, clock: MovableClock
) -> None:
    appended = new_event("e1", subject="order-7", extensions={"traceparent": "00-ab", "n": 3})
    await event_log.append([appended])

    (stored,) = await event_log.read(ACME_DEFAULT)
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

    (stored,) = await event_log.read(ACME_DEFAULT)
    body = body_of(stored.body)
    assert (body["tenant"], body["bus"]) == ("acme", "default")


async def test_read_pages_with_after_and_limit(event_log: EventLog) -> None:
    await event_log.append([new_event(f"e{i}") for i in range(10)])

    first = await event_log.read(ACME_DEFAULT, after=0, limit=4)
    second = await event_log.read(ACME_DEFAULT, after=first[-1].position, limit=4)
    third = await event_log.read(ACME_DEFAULT, after=second[-1].position, limit=4)
    rest = await event_log.read(ACME_DEFAULT, after=third[-1].position, limit=4)

    assert [e.id for e in first + second + third] == [f"e{i}" for i in range(10)]
    assert (len(first), len(second), len(third), rest) == (4, 4, 2, [])


async def test_buses_and_tenants_are_separate(event_log: EventLog) -> None:
    await event_log.append(
        [
            new_event("same", tenant=TenantName("acme"), bus="default"),
            new_event("same", tenant=TenantName("acme"), bus="audit"),
            new_event("same", tenant=TenantName("globex"), bus="default"),
        ]
    )

    acme, globex = TenantName("acme"), TenantName("globex")
    for tenant, bus in [(acme, "default"), (acme, "audit"), (globex, "default")]:
        stored = await event_log.read(BusRef(tenant, bus))
        assert [(e.tenant, e.bus, e.id) for e in stored] == [(tenant, bus, "same")]
        assert body_of(stored[0].body)["bus"] == bus
    assert await event_log.read(BusRef(TenantName("globex"), "audit")) == []


async def test_last_position_follows_each_bus(event_log: EventLog) -> None:
    assert await event_log.last_position(ACME_DEFAULT) == 0
    a = await event_log.append([new_event("a1"), new_event("a2")])
    b = await event_log.append([new_event("b1", bus="audit")])

    assert await event_log.last_position(ACME_DEFAULT) == a[1].position
    assert await event_log.last_position(BusRef(TenantName("acme"), "audit")) == b[0].position
    assert await event_log.last_position(BusRef(TenantName("acme"), "nothing")) == 0


async def test_same_id_and_source_on_a_bus_is_stored_once(event_log: EventLog) -> None:
    (first,) = await event_log.append([new_event("e1")])
    again = await event_log.append([new_event("e1"), new_event("e1", source="/other")])

    assert again[0].status is AppendStatus.DUPLICATE
    assert again[0].position == first.position
    assert again[1].status is AppendStatus.STORED
    assert [(e.id, e.source) for e in await event_log.read(ACME_DEFAULT)] == [
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
    assert sorted(e.id for e in await event_log.read(ACME_DEFAULT)) == [
        "x",
        "y",
        "z",
    ]


async def test_an_append_announces_its_results_and_recorded_time_before_it_returns(
    event_log: EventLog,
) -> None:
    await event_log.append([new_event("x")])
    told: list[tuple[list[Any], bytes]] = []
    results = await event_log.append(
        [new_event("x"), new_event("y")],
        lambda outcomes, recorded: told.append((list(outcomes), recorded)),
    )

    assert told == [(results, told[0][1])]  # once, with the results the append returns
    (y,) = [e for e in await event_log.read(ACME_DEFAULT) if e.id == "y"]
    assert body_of(y.body)["recordedtime"] == told[0][1].decode()
    assert parse_rfc3339(told[0][1].decode()) == y.recorded_time


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
        ACME_DEFAULT, T0 + timedelta(minutes=30), T0 + timedelta(hours=3)
    )
    assert [e.id for e in window] == ["h1a", "h1b", "h2a", "h2b"]

    page = await event_log.read_window(
        ACME_DEFAULT,
        T0 + timedelta(minutes=30),
        T0 + timedelta(hours=3),
        limit=3,
    )
    rest = await event_log.read_window(
        ACME_DEFAULT,
        T0 + timedelta(minutes=30),
        T0 + timedelta(hours=3),
        after=page[-1].position,
    )
    assert [e.id for e in page + rest] == [e.id for e in window]
    exact = await event_log.read_window(ACME_DEFAULT, T0, T0 + timedelta(hours=1))
    assert [e.id for e in exact] == ["h0a", "h0b"]
    assert await event_log.read_window(ACME_DEFAULT, T0 + timedelta(days=1), T0) == []
    assert (
        await event_log.read_window(BusRef(TenantName("acme"), "other"), T0, T0 + timedelta(days=1))
        == []
    )


async def test_trim_removes_only_older_events_and_keeps_positions_growing(
    event_log: EventLog, clock: MovableClock
) -> None:
    old = await event_log.append([new_event("old1"), new_event("old2", bus="audit")])
    clock.advance(timedelta(days=2))
    await event_log.append([new_event("new1")])

    removed = await event_log.trim(T0 + timedelta(days=1))

    assert removed == 2
    assert [e.id for e in await event_log.read(ACME_DEFAULT)] == ["new1"]
    assert await event_log.read(BusRef(TenantName("acme"), "audit")) == []
    assert await event_log.last_position(BusRef(TenantName("acme"), "audit")) == old[1].position
    assert await event_log.trim(T0 + timedelta(days=1)) == 0

    assert await event_log.trim(T0 + timedelta(days=3)) == 1
    assert await event_log.read(ACME_DEFAULT) == []
    (later,) = await event_log.append([new_event("later")])
    assert later.position > old[1].position


async def test_recorded_time_never_goes_back_when_the_clock_does(
    event_log: EventLog, clock: MovableClock
) -> None:
    await event_log.append([new_event("e1")])
    clock.advance(-timedelta(minutes=5))
    await event_log.append([new_event("e2")])

    first, second = await event_log.read(ACME_DEFAULT)
    assert second.recorded_time >= first.recorded_time


async def test_events_and_dedup_survive_reopening(
    log_factory: LogFactory, clock: MovableClock
) -> None:
    async with log_factory() as log:
        stored = await log.append([new_event(f"e{i}") for i in range(3)])
    async with log_factory() as log:
        assert [e.id for e in await log.read(ACME_DEFAULT)] == [
            "e0",
            "e1",
            "e2",
        ]
        (repeat,) = await log.append([new_event("e1")])
        (fresh,) = await log.append([new_event("e3")])
        assert await log.last_position(ACME_DEFAULT) == fresh.position

    assert repeat.status is AppendStatus.DUPLICATE
    assert repeat.position == stored[1].position
    assert fresh.position > stored[-1].position


async def test_empty_append_is_a_no_op(event_log: EventLog) -> None:
    assert await event_log.append([]) == []
    assert await event_log.read(ACME_DEFAULT) == []


async def test_a_closed_log_says_so(log_factory: LogFactory) -> None:
    log = log_factory()
    with pytest.raises(LogClosed):
        await log.append([new_event("e1")])
    async with log:
        await log.ping()
    with pytest.raises(LogClosed):
        await log.append([new_event("e1")])
    with pytest.raises(LogClosed):
        await log.read(ACME_DEFAULT)
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
            for e in await log.read(BusRef(TenantName("acme"), bus))
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
            await event_log.read(ACME_DEFAULT, limit=limit)
        with pytest.raises(ValueError, match="limit"):
            await event_log.read_window(ACME_DEFAULT, T0, T0, limit=limit)


def _user_event(event_id: str, user: str, **kwargs: Any) -> NewEvent:
    return new_event(event_id, data={"userId": user, "n": event_id}, **kwargs)


def _of_user(user: str) -> Callable[[StoredEvent], bool]:
    def matches(event: StoredEvent) -> bool:
        data = body_of(event.body)["data"]
        return isinstance(data, dict) and data.get("userId") == user

    return matches


async def test_erase_removes_matching_events_and_keeps_the_others_in_place(
    event_log: EventLog,
) -> None:
    appended = await event_log.append(
        [_user_event(f"e{i}", "ann" if i % 3 == 0 else "bob") for i in range(9)]
    )

    erased = await event_log.erase(TenantName("acme"), None, b'"ann"', _of_user("ann"))

    assert [(e.bus, e.id, e.source) for e in erased] == [
        ("default", f"e{i}", "/orders") for i in (0, 3, 6)
    ]
    assert [e.position for e in erased] == [appended[i].position for i in (0, 3, 6)]
    kept = await event_log.read(ACME_DEFAULT)
    assert [e.id for e in kept] == [f"e{i}" for i in range(9) if i % 3]
    assert [e.position for e in kept] == [appended[i].position for i in range(9) if i % 3]
    assert all(b"ann" not in e.body for e in kept)
    assert await event_log.last_position(ACME_DEFAULT) == appended[-1].position


async def test_reads_skip_erased_events_without_stopping_short_of_limit(
    event_log: EventLog, clock: MovableClock
) -> None:
    # Batches of their own, so the erased events fill whole stretches of the log.
    await event_log.append([_user_event("first", "bob")])
    await event_log.append([_user_event(f"a{i}", "ann") for i in range(50)])
    await event_log.append([_user_event("middle", "bob")])
    await event_log.append([_user_event(f"b{i}", "ann") for i in range(50)])
    await event_log.append([_user_event("last", "bob")])

    assert len(await event_log.erase(TenantName("acme"), "default", b"ann", _of_user("ann"))) == 100

    assert [e.id for e in await event_log.read(ACME_DEFAULT, limit=3)] == [
        "first",
        "middle",
        "last",
    ]
    first, *_ = await event_log.read(ACME_DEFAULT, limit=1)
    (second,) = await event_log.read(ACME_DEFAULT, after=first.position, limit=1)
    (third,) = await event_log.read(ACME_DEFAULT, after=second.position, limit=1)
    assert (second.id, third.id) == ("middle", "last")
    assert await event_log.read(ACME_DEFAULT, after=third.position) == []
    window = await event_log.read_window(ACME_DEFAULT, T0, T0 + timedelta(seconds=1), limit=2)
    assert [e.id for e in window] == ["first", "middle"]


async def test_erase_keeps_to_its_tenant_and_bus(event_log: EventLog) -> None:
    await event_log.append(
        [
            _user_event("e1", "ann"),
            _user_event("e2", "ann", bus="audit"),
            _user_event("e3", "ann", tenant="other"),
        ]
    )

    one_bus = await event_log.erase(TenantName("acme"), "audit", b"ann", _of_user("ann"))
    assert [(e.tenant, e.bus, e.id) for e in one_bus] == [("acme", "audit", "e2")]
    assert [e.id for e in await event_log.read(ACME_DEFAULT)] == ["e1"]

    every_bus = await event_log.erase(TenantName("acme"), None, b"ann", _of_user("ann"))
    assert [(e.bus, e.id) for e in every_bus] == [("default", "e1")]
    assert [e.id for e in await event_log.read(BusRef(TenantName("other"), "default"))] == ["e3"]
    assert await event_log.erase(TenantName("acme"), "nosuchbus", b"", _of_user("ann")) == []


async def test_only_events_holding_the_needle_are_offered(event_log: EventLog) -> None:
    await event_log.append([_user_event("e1", "ann"), _user_event("e2", "bob")])
    offered: list[str] = []

    def matches(event: StoredEvent) -> bool:
        offered.append(event.id)
        return False

    assert await event_log.erase(TenantName("acme"), None, b'"bob"', matches) == []
    assert offered == ["e2"]
    offered.clear()
    await event_log.erase(TenantName("acme"), None, b"", matches)
    assert offered == ["e1", "e2"]


async def test_erased_events_are_never_offered_again(event_log: EventLog) -> None:
    await event_log.append([_user_event("e1", "ann")])
    assert len(await event_log.erase(TenantName("acme"), None, b"", _of_user("ann"))) == 1

    offered: list[str] = []

    def everything(event: StoredEvent) -> bool:
        offered.append(event.id)
        return True

    assert await event_log.erase(TenantName("acme"), None, b"", everything) == []
    assert offered == []


async def test_before_sees_each_chunk_while_it_is_still_there(event_log: EventLog) -> None:
    await event_log.append([_user_event("e1", "ann"), _user_event("e2", "bob")])
    seen: list[tuple[list[str], list[str]]] = []

    async def before(chunk: Sequence[ErasedEvent]) -> None:
        present = [e.id for e in await event_log.read(ACME_DEFAULT)]
        seen.append(([e.id for e in chunk], present))

    erased = await event_log.erase(TenantName("acme"), None, b"", _of_user("ann"), before)

    assert seen == [(["e1"], ["e1", "e2"])]
    assert [e.id for e in erased] == ["e1"]


async def test_a_failing_before_leaves_the_events(event_log: EventLog) -> None:
    await event_log.append([_user_event("e1", "ann")])

    async def refuse(chunk: Sequence[ErasedEvent]) -> None:
        raise RuntimeError("cannot record the suppression")

    with pytest.raises(RuntimeError, match="suppression"):
        await event_log.erase(TenantName("acme"), None, b"", _of_user("ann"), refuse)
    assert [e.id for e in await event_log.read(ACME_DEFAULT)] == ["e1"]


async def test_erasure_survives_reopening_and_the_erased_key_stays_a_duplicate(
    log_factory: LogFactory,
) -> None:
    async with log_factory() as log:
        (stored,) = await log.append([_user_event("e1", "ann")])
        await log.append([_user_event("e2", "bob")])
        await log.erase(TenantName("acme"), None, b"", _of_user("ann"))
        (again,) = await log.append([_user_event("e1", "ann")])
    async with log_factory() as log:
        assert [e.id for e in await log.read(ACME_DEFAULT)] == ["e2"]
        (after_restart,) = await log.append([_user_event("e1", "ann")])

    for result in (again, after_restart):
        assert result.status is AppendStatus.DUPLICATE
        assert result.position == stored.position


async def test_appends_go_on_while_a_large_erasure_runs(event_log: EventLog) -> None:
    for start in range(0, 3000, 500):
        await event_log.append(
            [_user_event(f"e{i}", "ann" if i % 2 else "bob") for i in range(start, start + 500)]
        )

    erasing = asyncio.ensure_future(
        event_log.erase(TenantName("acme"), None, b"ann", _of_user("ann"))
    )
    during = [await event_log.append([_user_event(f"late{i}", "bob")]) for i in range(5)]
    erased = await erasing

    assert len(erased) == 1500
    assert all(r[0].status is AppendStatus.STORED for r in during)
    kept = [e.id for e in await event_log.read(ACME_DEFAULT, limit=5000)]
    assert kept == [f"e{i}" for i in range(0, 3000, 2)] + [f"late{i}" for i in range(5)]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    batches=st.lists(
        st.lists(st.tuples(st.sampled_from(["default", "audit"]), st.sampled_from("abc"))),
        max_size=6,
    ),
    gone=st.sets(st.sampled_from("abc"), max_size=2),
    limit=st.integers(1, 4),
)
async def test_erasure_and_paging_match_a_model(
    log_factory: LogFactory,
    batches: list[list[tuple[str, str]]],
    gone: set[str],
    limit: int,
) -> None:
    factory = replace(log_factory, data_dir=log_factory.data_dir / uuid.uuid4().hex)
    users: dict[str, str] = {}
    model: dict[str, list[str]] = {"default": [], "audit": []}
    async with factory() as log:
        for number, batch in enumerate(batches):
            events = [_user_event(f"{number}.{i}", u, bus=b) for i, (b, u) in enumerate(batch)]
            await log.append(events)
            for event, (bus, user) in zip(events, batch, strict=True):
                users[event.id] = user
                model[bus].append(event.id)

        erased = await log.erase(TenantName("acme"), None, b"", lambda e: users[e.id] in gone)

        assert sorted(e.id for e in erased) == sorted(i for i in users if users[i] in gone)
        for bus, ids in model.items():
            kept = [i for i in ids if users[i] not in gone]
            paged: list[str] = []
            after = 0
            while page := await log.read(BusRef(TenantName("acme"), bus), after=after, limit=limit):
                paged.extend(e.id for e in page)
                assert len(page) == limit or len(paged) == len(kept)  # never short of limit
                after = page[-1].position
            assert paged == kept

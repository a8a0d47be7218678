"""The archive store contract, run against every backend: SQLite files and a real nats-server.

Archiving with the cursor, window reads and paging, totals, trims, drops, erasures, reopening.
What only one backend has is tested beside it (`test_sqlite_archive_store.py`,
`test_nats_archive_store.py`).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import msgspec
import pytest
from tests.nats_support import NatsServer
from tests.storage.archive_support import (
    BACKENDS,
    T0,
    StoreFactory,
    read_all,
    read_all_wide,
    stored,
)

from stellwerk.refs import BusRef, TenantName
from stellwerk.seams import (
    ArchiveCursorConflict,
    ArchivedEvent,
    ArchiveStats,
    ArchiveStore,
    ArchiveStoreClosed,
)

ACME_DEFAULT = BusRef(TenantName("acme"), "default")


@pytest.fixture(params=BACKENDS)
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    if request.param == "nats":
        server: NatsServer = request.getfixturevalue("nats_server")
        return StoreFactory(request.param, tmp_path, server.url)
    return StoreFactory(request.param, tmp_path)


@pytest.fixture
async def store(store_factory: StoreFactory) -> AsyncIterator[ArchiveStore]:
    async with store_factory() as opened:
        yield opened


async def test_archive_stores_copies_and_moves_the_cursor(store: ArchiveStore) -> None:
    assert await store.cursor(ACME_DEFAULT) == 0
    events = [stored(p) for p in (3, 4, 6)]

    await store.archive(ACME_DEFAULT, 8, [("a1", events[0]), ("a1", events[2]), ("a2", events[1])])

    assert await store.cursor(ACME_DEFAULT) == 8
    assert await store.cursor(BusRef(TenantName("acme"), "other")) == 0
    assert await store.cursor(BusRef(TenantName("globex"), "default")) == 0
    got = await read_all(store, "a1")
    assert [(e.uid, e.position, e.id, e.body) for e in got] == [
        ("a1", 3, "e3", events[0].body),
        ("a1", 6, "e6", events[2].body),
    ]
    assert got[0].recorded_time == T0
    assert (got[0].source, got[0].type, got[0].subject) == ("/orders", "order.created", None)
    assert [e.position for e in await read_all(store, "a2")] == [4]


async def test_a_run_without_copies_still_moves_the_cursor(store: ArchiveStore) -> None:
    await store.archive(ACME_DEFAULT, 50, [])

    assert await store.cursor(ACME_DEFAULT) == 50
    assert await store.stats(["a1"]) == {"a1": ArchiveStats(0, 0)}


async def test_archiving_at_or_below_the_cursor_is_a_conflict(store: ArchiveStore) -> None:
    await store.archive(ACME_DEFAULT, 10, [("a1", stored(10))])

    with pytest.raises(ArchiveCursorConflict):
        await store.archive(ACME_DEFAULT, 10, [])
    with pytest.raises(ArchiveCursorConflict):
        await store.archive(ACME_DEFAULT, 9, [("a1", stored(9))])
    with pytest.raises(ArchiveCursorConflict):  # an event the archiver has looked at already
        await store.archive(ACME_DEFAULT, 12, [("a1", stored(10)), ("a1", stored(11))])
    with pytest.raises(ArchiveCursorConflict):  # an event beyond the new cursor
        await store.archive(ACME_DEFAULT, 12, [("a1", stored(13))])

    assert await store.cursor(ACME_DEFAULT) == 10
    assert [e.position for e in await read_all(store, "a1")] == [10]


async def test_an_event_of_another_bus_is_refused(store: ArchiveStore) -> None:
    with pytest.raises(ValueError, match="globex"):
        await store.archive(
            ACME_DEFAULT,
            5,
            [("a1", stored(5, tenant=TenantName("globex")))],
        )

    assert await store.cursor(ACME_DEFAULT) == 0


async def test_windows_are_half_open_and_count_alike(store: ArchiveStore) -> None:
    times = [T0 + timedelta(minutes=m) for m in (0, 0, 1, 2, 3)]
    await store.archive(ACME_DEFAULT, 5, [("a1", stored(p + 1, at=t)) for p, t in enumerate(times)])
    start, end = T0, T0 + timedelta(minutes=2)

    got = await store.read_window("a1", start, end)

    assert [e.position for e in got] == [1, 2, 3]
    assert await store.count_window("a1", start, end) == 3
    assert await store.count_window("a1", end, end + timedelta(hours=1)) == 2
    assert await store.read_window("a1", end, start) == []
    assert await store.read_window("unknown", start, end) == []
    assert await store.count_window("unknown", start, end) == 0
    with pytest.raises(ValueError, match="limit"):
        await store.read_window("a1", start, end, limit=0)


async def test_paging_by_seq_visits_each_event_once_in_position_order(
    store: ArchiveStore,
) -> None:
    # Two archives interleaved, many events sharing a recorded time (one log group).
    entries = [
        (uid, stored(p, at=T0 + timedelta(seconds=p // 7)))
        for p in range(1, 201)
        for uid in ("a1", "a2")
        if uid == "a1" or p % 3 == 0
    ]
    await store.archive(ACME_DEFAULT, 200, entries)

    got = await read_all(store, "a1", page=9)

    assert [e.position for e in got] == list(range(1, 201))
    seqs = [e.seq for e in got]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 200
    assert [e.position for e in await read_all(store, "a2", page=4)] == list(range(3, 201, 3))


async def test_paging_goes_on_after_the_last_read_event_was_erased(
    store: ArchiveStore,
) -> None:
    await store.archive(ACME_DEFAULT, 6, [("a1", stored(p, user=f"u{p}")) for p in range(1, 7)])
    first = await store.read_window("a1", T0, T0 + timedelta(1), limit=3)
    await store.erase(["a1"], b'"u3"', lambda e: True)

    rest = await store.read_window("a1", T0, T0 + timedelta(1), after_seq=first[-1].seq)

    assert [e.position for e in rest] == [4, 5, 6]


async def test_stats_are_running_totals(store: ArchiveStore) -> None:
    events = [stored(p) for p in range(1, 4)]
    await store.archive(ACME_DEFAULT, 3, [("a1", e) for e in events] + [("a2", events[0])])

    stats = await store.stats(["a1", "a2", "a3"])

    assert stats == {
        "a1": ArchiveStats(3, sum(len(e.body) for e in events)),
        "a2": ArchiveStats(1, len(events[0].body)),
        "a3": ArchiveStats(0, 0),
    }


async def test_trim_removes_what_was_recorded_before_the_cut(store: ArchiveStore) -> None:
    events = [stored(p, at=T0 + timedelta(days=p)) for p in range(1, 6)]
    await store.archive(ACME_DEFAULT, 5, [(u, e) for e in events for u in ("a1", "a2")])

    removed = await store.trim("a1", T0 + timedelta(days=3))

    assert removed == 2
    assert [e.position for e in await read_all_wide(store, "a1")] == [3, 4, 5]
    assert len(await read_all_wide(store, "a2")) == 5
    stats = await store.stats(["a1"])
    assert stats["a1"] == ArchiveStats(3, sum(len(e.body) for e in events[2:]))
    assert await store.trim("a1", T0 + timedelta(days=3)) == 0
    assert await store.trim("unknown", T0) == 0


async def test_drop_removes_the_whole_archive_and_nothing_else(store: ArchiveStore) -> None:
    events = [stored(p) for p in range(1, 4)]
    await store.archive(ACME_DEFAULT, 3, [(u, e) for e in events for u in ("a1", "a2")])

    assert await store.drop("a1") == 3

    assert await read_all(store, "a1") == []
    assert await store.stats(["a1", "a2"]) == {
        "a1": ArchiveStats(0, 0),
        "a2": ArchiveStats(3, sum(len(e.body) for e in events)),
    }
    assert await store.drop("a1") == 0
    assert await store.cursor(ACME_DEFAULT) == 3


async def test_erase_offers_only_events_holding_the_needle(store: ArchiveStore) -> None:
    users = {1: "alice", 2: "bob", 3: "alice", 4: "alicea", 5: "carol"}
    await store.archive(
        ACME_DEFAULT,
        5,
        [(u, stored(p, user=name)) for p, name in users.items() for u in ("a1", "a2", "a3")],
    )
    offered: list[tuple[str, int]] = []

    def is_alice(event: ArchivedEvent) -> bool:
        offered.append((event.uid, event.position))
        return bool(msgspec.json.decode(event.body)["data"]["user"] == "alice")

    removed = await store.erase(["a1", "a2"], b'"alice', is_alice)

    # "alicea" holds the needle but the predicate keeps it; a3 is not asked for.
    assert sorted(offered) == [(u, p) for u in ("a1", "a2") for p in (1, 3, 4)]
    assert sorted((e.uid, e.position) for e in removed) == [
        (u, p) for u in ("a1", "a2") for p in (1, 3)
    ]
    assert [e.position for e in await read_all(store, "a1")] == [2, 4, 5]
    assert [e.position for e in await read_all(store, "a3")] == [1, 2, 3, 4, 5]
    stats = await store.stats(["a1", "a3"])
    assert stats["a1"].events == 3
    assert stats["a3"].events == 5
    assert stats["a1"].bytes == sum(len(stored(p, user=users[p]).body) for p in (2, 4, 5))
    assert await store.erase(["a1", "a2"], b'"alice', is_alice) == []


async def test_everything_persists_across_a_reopen(store_factory: StoreFactory) -> None:
    async with store_factory() as store:
        await store.archive(ACME_DEFAULT, 7, [("a1", stored(p)) for p in (5, 6)])
        before = await read_all(store, "a1")

    async with store_factory() as store:
        assert await store.cursor(ACME_DEFAULT) == 7
        assert await read_all(store, "a1") == before
        assert (await store.stats(["a1"]))["a1"].events == 2
        await store.archive(ACME_DEFAULT, 9, [("a1", stored(8))])
        after = await read_all(store, "a1")
        assert after[-1].seq > before[-1].seq


async def test_seq_is_not_handed_out_again_after_the_newest_events_went(
    store_factory: StoreFactory,
) -> None:
    async with store_factory() as store:
        await store.archive(ACME_DEFAULT, 2, [("a1", stored(p)) for p in (1, 2)])
        last = (await read_all(store, "a1"))[-1].seq
        await store.drop("a1")

    async with store_factory() as store:
        await store.archive(ACME_DEFAULT, 3, [("a1", stored(3))])
        assert (await read_all(store, "a1"))[0].seq > last


async def test_a_closed_store_says_so(store_factory: StoreFactory) -> None:
    store = store_factory()
    with pytest.raises(ArchiveStoreClosed):
        await store.cursor(ACME_DEFAULT)
    async with store:
        await store.ping()
    with pytest.raises(ArchiveStoreClosed):
        await store.archive(ACME_DEFAULT, 1, [])
    with pytest.raises(ArchiveStoreClosed):
        await store.stats(["a1"])


async def test_stragglers_recorded_slightly_out_of_order_are_read_counted_and_trimmed(
    store: ArchiveStore,
) -> None:
    # Recorded times from gateways whose clocks differ by a few seconds: position 3 was
    # recorded before position 2.
    offsets = {1: 0, 2: 10, 3: 7, 4: 12, 5: 20}
    await store.archive(
        ACME_DEFAULT,
        5,
        [("a1", stored(p, at=T0 + timedelta(seconds=s))) for p, s in offsets.items()],
    )
    window = (T0 + timedelta(seconds=8), T0 + timedelta(seconds=11))

    assert sorted(e.position for e in await store.read_window("a1", *window)) == [2]
    assert await store.count_window("a1", *window) == 1
    early = (T0, T0 + timedelta(seconds=8))
    assert sorted(e.position for e in await store.read_window("a1", *early)) == [1, 3]

    assert await store.trim("a1", T0 + timedelta(seconds=9)) == 2

    assert sorted(e.position for e in await read_all(store, "a1")) == [2, 4, 5]
    assert (await store.stats(["a1"]))["a1"].events == 3


async def test_ping_answers_on_an_open_store(store: ArchiveStore) -> None:
    await store.ping()


async def test_counts_and_reads_agree_with_the_recorded_times_for_any_window(
    store: ArchiveStore,
) -> None:
    # 600 events a second apart, each recorded up to 4 s off (clocks of several gateways).
    rng = random.Random(7)
    times = {p: T0 + timedelta(seconds=p + rng.uniform(-4, 4)) for p in range(1, 601)}
    await store.archive(ACME_DEFAULT, 600, [("a1", stored(p, at=t)) for p, t in times.items()])

    for first, last in [(0, 601), (30, 31), (100, 130), (45, 560), (-50, 12), (590, 700)]:
        start, end = T0 + timedelta(seconds=first), T0 + timedelta(seconds=last)
        inside = {p for p, t in times.items() if start <= t < end}
        assert await store.count_window("a1", start, end) == len(inside), (first, last)
        got = await store.read_window("a1", start, end, limit=1000)
        assert {e.position for e in got} == inside, (first, last)

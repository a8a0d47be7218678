"""The embedded archive store on real SQLite files: archiving with the cursor, reads, removal."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from stellwerk.storage.archives import (
    ArchiveCursorConflict,
    ArchivedEvent,
    ArchiveStats,
    ArchiveStoreClosed,
)
from stellwerk.storage.eventlog import StoredEvent
from stellwerk.storage.sqlite import ARCHIVES_FILE, SqliteArchiveStore
from stellwerk.storage.sqlite.archives import DELETE_CHUNK

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def stored(
    position: int,
    *,
    at: datetime = T0,
    user: str = "u1",
    tenant: str = "acme",
    bus: str = "default",
) -> StoredEvent:
    body = msgspec.json.encode(
        {"id": f"e{position}", "source": "/orders", "type": "order.created", "data": {"user": user}}
    )
    return StoredEvent(
        tenant, bus, position, f"e{position}", "/orders", "order.created", None, at, body
    )


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / ARCHIVES_FILE


@pytest.fixture
async def store(path: Path) -> AsyncIterator[SqliteArchiveStore]:
    async with SqliteArchiveStore(path) as opened:
        yield opened


async def read_all(store: SqliteArchiveStore, uid: str, *, page: int = 1000) -> list[ArchivedEvent]:
    out: list[ArchivedEvent] = []
    after = 0
    while True:
        got = await store.read_window(
            uid, T0 - timedelta(days=1), T0 + timedelta(days=1), after, page
        )
        out.extend(got)
        if len(got) < page:
            return out
        after = got[-1].seq


async def test_archive_stores_copies_and_moves_the_cursor(store: SqliteArchiveStore) -> None:
    assert await store.cursor("acme", "default") == 0
    events = [stored(p) for p in (3, 4, 6)]

    await store.archive(
        "acme", "default", 8, [("a1", events[0]), ("a1", events[2]), ("a2", events[1])]
    )

    assert await store.cursor("acme", "default") == 8
    assert await store.cursor("acme", "other") == 0
    assert await store.cursor("globex", "default") == 0
    got = await read_all(store, "a1")
    assert [(e.uid, e.position, e.id, e.body) for e in got] == [
        ("a1", 3, "e3", events[0].body),
        ("a1", 6, "e6", events[2].body),
    ]
    assert got[0].recorded_time == T0
    assert (got[0].source, got[0].type, got[0].subject) == ("/orders", "order.created", None)
    assert [e.position for e in await read_all(store, "a2")] == [4]


async def test_a_run_without_copies_still_moves_the_cursor(store: SqliteArchiveStore) -> None:
    await store.archive("acme", "default", 50, [])

    assert await store.cursor("acme", "default") == 50
    assert await store.stats(["a1"]) == {"a1": ArchiveStats(0, 0)}


async def test_archiving_at_or_below_the_cursor_is_a_conflict(store: SqliteArchiveStore) -> None:
    await store.archive("acme", "default", 10, [("a1", stored(10))])

    with pytest.raises(ArchiveCursorConflict):
        await store.archive("acme", "default", 10, [])
    with pytest.raises(ArchiveCursorConflict):
        await store.archive("acme", "default", 9, [("a1", stored(9))])
    with pytest.raises(ArchiveCursorConflict):  # an event the archiver has looked at already
        await store.archive("acme", "default", 12, [("a1", stored(10)), ("a1", stored(11))])
    with pytest.raises(ArchiveCursorConflict):  # an event beyond the new cursor
        await store.archive("acme", "default", 12, [("a1", stored(13))])

    assert await store.cursor("acme", "default") == 10
    assert [e.position for e in await read_all(store, "a1")] == [10]


async def test_an_event_of_another_bus_is_refused(store: SqliteArchiveStore) -> None:
    with pytest.raises(ValueError, match="globex"):
        await store.archive("acme", "default", 5, [("a1", stored(5, tenant="globex"))])

    assert await store.cursor("acme", "default") == 0


async def test_a_failing_archive_stores_neither_copies_nor_cursor(
    store: SqliteArchiveStore,
) -> None:
    good = stored(1)
    # SQLite cannot bind a list: the insert fails after the first copy went in.
    bad = StoredEvent(
        "acme", "default", 2, "e2", "/orders", "order.created", ["x"],  # type: ignore[arg-type]
        T0, b"{}",
    )  # fmt: skip

    with pytest.raises(Exception, match="type 'list' is not supported"):
        await store.archive("acme", "default", 2, [("a1", good), ("a1", bad)])

    assert await store.cursor("acme", "default") == 0
    assert await read_all(store, "a1") == []
    assert await store.stats(["a1"]) == {"a1": ArchiveStats(0, 0)}
    await store.archive("acme", "default", 2, [("a1", good)])
    assert [e.position for e in await read_all(store, "a1")] == [1]


async def test_windows_are_half_open_and_count_alike(store: SqliteArchiveStore) -> None:
    times = [T0 + timedelta(minutes=m) for m in (0, 0, 1, 2, 3)]
    await store.archive(
        "acme", "default", 5, [("a1", stored(p + 1, at=t)) for p, t in enumerate(times)]
    )
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
    store: SqliteArchiveStore,
) -> None:
    # Two archives interleaved, many events sharing a recorded time (one log group).
    entries = [
        (uid, stored(p, at=T0 + timedelta(seconds=p // 7)))
        for p in range(1, 201)
        for uid in ("a1", "a2")
        if uid == "a1" or p % 3 == 0
    ]
    await store.archive("acme", "default", 200, entries)

    got = await read_all(store, "a1", page=9)

    assert [e.position for e in got] == list(range(1, 201))
    seqs = [e.seq for e in got]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 200
    assert [e.position for e in await read_all(store, "a2", page=4)] == list(range(3, 201, 3))


async def test_paging_goes_on_after_the_last_read_event_was_erased(
    store: SqliteArchiveStore,
) -> None:
    await store.archive(
        "acme", "default", 6, [("a1", stored(p, user=f"u{p}")) for p in range(1, 7)]
    )
    first = await store.read_window("a1", T0, T0 + timedelta(1), limit=3)
    await store.erase(["a1"], b'"u3"', lambda e: True)

    rest = await store.read_window("a1", T0, T0 + timedelta(1), after_seq=first[-1].seq)

    assert [e.position for e in rest] == [4, 5, 6]


async def test_stats_are_running_totals(store: SqliteArchiveStore) -> None:
    events = [stored(p) for p in range(1, 4)]
    await store.archive("acme", "default", 3, [("a1", e) for e in events] + [("a2", events[0])])

    stats = await store.stats(["a1", "a2", "a3"])

    assert stats == {
        "a1": ArchiveStats(3, sum(len(e.body) for e in events)),
        "a2": ArchiveStats(1, len(events[0].body)),
        "a3": ArchiveStats(0, 0),
    }


async def test_trim_removes_what_was_recorded_before_the_cut(store: SqliteArchiveStore) -> None:
    events = [stored(p, at=T0 + timedelta(days=p)) for p in range(1, 6)]
    await store.archive("acme", "default", 5, [(u, e) for e in events for u in ("a1", "a2")])

    removed = await store.trim("a1", T0 + timedelta(days=3))

    assert removed == 2
    assert [e.position for e in await read_all_wide(store, "a1")] == [3, 4, 5]
    assert len(await read_all_wide(store, "a2")) == 5
    stats = await store.stats(["a1"])
    assert stats["a1"] == ArchiveStats(3, sum(len(e.body) for e in events[2:]))
    assert await store.trim("a1", T0 + timedelta(days=3)) == 0
    assert await store.trim("unknown", T0) == 0


async def read_all_wide(store: SqliteArchiveStore, uid: str) -> list[ArchivedEvent]:
    return await store.read_window(uid, T0 - timedelta(days=365), T0 + timedelta(days=365))


async def test_trim_and_drop_go_in_chunks_past_the_chunk_size(store: SqliteArchiveStore) -> None:
    n = DELETE_CHUNK + 5
    await store.archive("acme", "default", n, [("a1", stored(p)) for p in range(1, n + 1)])

    assert await store.trim("a1", T0 + timedelta(seconds=1)) == n
    assert await store.stats(["a1"]) == {"a1": ArchiveStats(0, 0)}


async def test_drop_removes_the_whole_archive_and_nothing_else(store: SqliteArchiveStore) -> None:
    events = [stored(p) for p in range(1, 4)]
    await store.archive("acme", "default", 3, [(u, e) for e in events for u in ("a1", "a2")])

    assert await store.drop("a1") == 3

    assert await read_all(store, "a1") == []
    assert await store.stats(["a1", "a2"]) == {
        "a1": ArchiveStats(0, 0),
        "a2": ArchiveStats(3, sum(len(e.body) for e in events)),
    }
    assert await store.drop("a1") == 0
    assert await store.cursor("acme", "default") == 3


async def test_erase_offers_only_events_holding_the_needle(store: SqliteArchiveStore) -> None:
    users = {1: "alice", 2: "bob", 3: "alice", 4: "alicea", 5: "carol"}
    await store.archive(
        "acme",
        "default",
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


async def test_everything_persists_across_a_reopen(path: Path) -> None:
    async with SqliteArchiveStore(path) as store:
        await store.archive("acme", "default", 7, [("a1", stored(p)) for p in (5, 6)])
        before = await read_all(store, "a1")

    async with SqliteArchiveStore(path) as store:
        assert await store.cursor("acme", "default") == 7
        assert await read_all(store, "a1") == before
        assert (await store.stats(["a1"]))["a1"].events == 2
        await store.archive("acme", "default", 9, [("a1", stored(8))])
        after = await read_all(store, "a1")
        assert after[-1].seq > before[-1].seq


async def test_seq_is_not_handed_out_again_after_the_newest_events_went(path: Path) -> None:
    async with SqliteArchiveStore(path) as store:
        await store.archive("acme", "default", 2, [("a1", stored(p)) for p in (1, 2)])
        last = (await read_all(store, "a1"))[-1].seq
        await store.drop("a1")

    async with SqliteArchiveStore(path) as store:
        await store.archive("acme", "default", 3, [("a1", stored(3))])
        assert (await read_all(store, "a1"))[0].seq > last


async def test_a_closed_store_says_so(path: Path) -> None:
    store = SqliteArchiveStore(path)
    with pytest.raises(ArchiveStoreClosed):
        await store.cursor("acme", "default")
    async with store:
        await store.ping()
    with pytest.raises(ArchiveStoreClosed):
        await store.archive("acme", "default", 1, [])
    with pytest.raises(ArchiveStoreClosed):
        await store.stats(["a1"])

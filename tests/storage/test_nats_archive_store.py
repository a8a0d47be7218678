"""What only the JetStream archive store has: its streams, archiving that a crash interrupts
between the copies and the cursor, racing archivers, a SIGKILLed server, secure erasure."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import nats
import pytest
from tests import polling
from tests.nats_support import NatsCluster, NatsServer
from tests.storage.archive_support import T0, read_all, read_all_wide, stored
from tests.storage.eventlog_support import ACME_DEFAULT, MovableClock, new_event

from stellwerk.routing.archiver import Archiver
from stellwerk.seams import ArchiveCursorConflict, ArchiveStats, ArchiveStoreError
from stellwerk.storage.archive.jetstream import JetStreamArchiveStore
from stellwerk.storage.archive.jetstream.io import ArchiveIO, ArchivesUnavailable
from stellwerk.storage.control import ControlPlane
from stellwerk.storage.eventlog.jetstream import JetStreamEventLog

T = TypeVar("T")
DEADLINE = 30.0


async def js_api(url: str, subject: str, request: object = None) -> dict[str, Any]:
    nc = await nats.connect(url)
    try:
        payload = b"" if request is None else json.dumps(request).encode()
        answer: dict[str, Any] = json.loads((await nc.request(subject, payload, timeout=5)).data)
        return answer
    finally:
        await nc.close()


async def eventually(attempt: Callable[[], Awaitable[T]]) -> T:
    """`attempt()` once it stops raising `ArchiveStoreError` (the server is coming back)."""
    return await polling.eventually(
        attempt,
        what="the store to come back",
        within=DEADLINE,
        every=0.05,
        accept=lambda _: True,
        ignoring=ArchiveStoreError,
    )


def crash_at(monkeypatch: pytest.MonkeyPatch, key_part: str) -> None:
    """Make the store's table writes of keys holding `key_part` fail as a lost connection
    would: the process "dies" right there, after everything before it was done."""
    put = ArchiveIO.put

    async def failing(self: ArchiveIO, key: str, body: bytes, expected: int) -> int | None:
        if key_part in key:
            raise ArchivesUnavailable(f"connection lost before writing {key}")
        return await put(self, key, body, expected)

    monkeypatch.setattr(ArchiveIO, "put", failing)


async def copies_state(store: JetStreamArchiveStore, url: str) -> dict[str, Any]:
    info = await js_api(url, f"$JS.API.STREAM.INFO.{store.layout.copies_stream}")
    state: dict[str, Any] = info["state"]
    return state


async def test_one_copies_stream_with_a_subject_per_archive_and_a_kv_shaped_table(
    nats_server: NatsServer,
) -> None:
    async with JetStreamArchiveStore(nats_server.url, namespace="lay") as store:
        await store.archive(
            ACME_DEFAULT,
            3,
            [("a-1", stored(1)), ("a-1", stored(2)), ("b.2", stored(3))],
        )
        copies = await js_api(
            nats_server.url,
            "$JS.API.STREAM.INFO.lay_archived",
            {"subjects_filter": "lay.archived.*"},
        )
        table = await js_api(nats_server.url, "$JS.API.STREAM.INFO.KV_lay_archives")

    assert copies["state"]["subjects"] == {"lay.archived.a-1": 2, "lay.archived.b_2E2": 1}
    assert copies["config"]["allow_direct"] is True
    assert table["config"]["max_msgs_per_subject"] == 1
    assert table["config"]["subjects"] == ["$KV.lay_archives.>"]


async def test_a_crash_before_the_cursor_moved_stores_and_counts_nothing_twice_on_retry(
    nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = [("a1", stored(p)) for p in range(1, 6)] + [("a2", stored(3))]
    async with JetStreamArchiveStore(nats_server.url) as store:
        with monkeypatch.context() as patch:
            crash_at(patch, ".cursor.")
            with pytest.raises(ArchivesUnavailable):
                await store.archive(ACME_DEFAULT, 5, run)
        assert await store.cursor(ACME_DEFAULT) == 0
        before = await copies_state(store, nats_server.url)

    # The archiver restarts from the old cursor and reads a longer run this time.
    async with JetStreamArchiveStore(nats_server.url) as store:
        await store.archive(ACME_DEFAULT, 7, [*run, ("a1", stored(7))])

        assert await store.cursor(ACME_DEFAULT) == 7
        assert [e.position for e in await read_all(store, "a1")] == [1, 2, 3, 4, 5, 7]
        assert [e.position for e in await read_all(store, "a2")] == [3]
        size = len(stored(1).body)
        assert await store.stats(["a1", "a2"]) == {
            "a1": ArchiveStats(6, 6 * size),
            "a2": ArchiveStats(1, size),
        }
        after = await copies_state(store, nats_server.url)
    # The first try's copies and totals stood: the retry published only the new copy.
    assert before["messages"] == 6
    assert after["last_seq"] == before["last_seq"] + 1


async def test_a_crash_between_the_copies_and_the_totals_leaves_no_duplicates(
    nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = [("a1", stored(p)) for p in range(1, 4)]
    async with JetStreamArchiveStore(nats_server.url) as store:
        with monkeypatch.context() as patch:
            crash_at(patch, ".totals.")
            with pytest.raises(ArchivesUnavailable):
                await store.archive(ACME_DEFAULT, 3, run)
        assert await store.stats(["a1"]) == {"a1": ArchiveStats(0, 0)}

        await store.archive(ACME_DEFAULT, 3, run)  # inside the duplicate window

        assert [e.position for e in await read_all(store, "a1")] == [1, 2, 3]
        assert (await store.stats(["a1"]))["a1"].events == 3
        assert (await copies_state(store, nats_server.url))["messages"] == 3


async def test_racing_archivers_of_one_bus_store_the_run_once(nats_server: NatsServer) -> None:
    run = [("a1", stored(p)) for p in range(1, 101)]
    async with (
        JetStreamArchiveStore(nats_server.url) as one,
        JetStreamArchiveStore(nats_server.url) as other,
    ):
        results = await asyncio.gather(
            one.archive(ACME_DEFAULT, 100, run),
            other.archive(ACME_DEFAULT, 100, run),
            return_exceptions=True,
        )

        conflicts = [r for r in results if isinstance(r, ArchiveCursorConflict)]
        assert len(conflicts) == 1, results
        assert results.count(None) == 1
        assert [e.position for e in await read_all(one, "a1")] == list(range(1, 101))
        assert (await one.stats(["a1"]))["a1"].events == 100
        assert await other.cursor(ACME_DEFAULT) == 100


async def test_the_store_carries_on_after_the_server_was_sigkilled(
    nats_server: NatsServer,
) -> None:
    store = JetStreamArchiveStore(nats_server.url, request_timeout=1.0, ack_timeout=1.0)
    async with store:
        await store.archive(ACME_DEFAULT, 10, [("a1", stored(p)) for p in range(1, 11)])

        nats_server.kill()
        with pytest.raises(ArchiveStoreError):
            await store.archive(ACME_DEFAULT, 12, [("a1", stored(11))])
        await nats_server.start_async()

        await eventually(lambda: store.archive(ACME_DEFAULT, 12, [("a1", stored(12))]))
        assert await store.cursor(ACME_DEFAULT) == 12
        assert [e.position for e in await read_all(store, "a1")] == [*range(1, 11), 12]
        assert (await store.stats(["a1"]))["a1"].events == 11


async def test_secure_erasure_leaves_nothing_of_the_erased_copy_in_the_server_files(
    nats_server: NatsServer,
) -> None:
    needle = "zeta-person-4711"
    async with JetStreamArchiveStore(nats_server.url) as store:
        await store.archive(ACME_DEFAULT, 2, [("a1", stored(1, user=needle)), ("a1", stored(2))])
        erased = await store.erase(["a1"], needle.encode(), lambda e: True)
        assert [e.position for e in erased] == [1]
    nats_server.stop()  # flushed to its files

    assert not [path for path in _files(nats_server.store_dir) if needle.encode() in path[1]]


def _files(directory: Path) -> list[tuple[Path, bytes]]:
    return [(path, path.read_bytes()) for path in directory.rglob("*") if path.is_file()]


async def test_trim_purges_the_run_below_the_cut_in_one_request(nats_server: NatsServer) -> None:
    async with JetStreamArchiveStore(nats_server.url) as store:
        events = [stored(p, at=T0.replace(day=p)) for p in range(1, 21)]
        await store.archive(ACME_DEFAULT, 20, [("a1", e) for e in events])

        assert await store.trim("a1", T0.replace(day=15)) == 14
        state = await copies_state(store, nats_server.url)
        assert state["messages"] == 6
        assert state.get("num_deleted", 0) == 0  # one purge, no single deletes
        assert state["first_seq"] == 15


async def test_a_trim_that_an_erasure_got_ahead_of_counts_the_archive_again(
    nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = [stored(p, at=T0.replace(day=p)) for p in range(1, 11)]
    purge = ArchiveIO.purge

    async def erased_first(self: ArchiveIO, subject: str, below: int | None = None) -> int:
        # An erasure in another process deletes a copy between the trim's read and its purge.
        assert await self.delete(below - 2 if below else 1, erase=True)
        return await purge(self, subject, below)

    async with JetStreamArchiveStore(nats_server.url) as store:
        await store.archive(ACME_DEFAULT, 10, [("a1", e) for e in events])
        monkeypatch.setattr(ArchiveIO, "purge", erased_first)

        assert await store.trim("a1", T0.replace(day=6)) == 4

        assert [e.position for e in await read_all_wide(store, "a1")] == [6, 7, 8, 9, 10]
        size = sum(len(e.body) for e in events[5:])
        assert await store.stats(["a1"]) == {"a1": ArchiveStats(5, size)}


async def test_the_archiver_runs_on_the_jetstream_log_and_store_and_resumes_after_a_restart(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    control = await ControlPlane.open(f"sqlite+aiosqlite:///{tmp_path / 'control.db'}")
    tenant = await control.create_tenant("acme")
    try:
        record, _ = await control.archives.put(
            tenant.id, "default", "orders", pattern={"type": ["order.created"]},
            retention_days=0, description="", start_position=0, max_archives=10,
        )  # fmt: skip
        wide = (T0 - timedelta(days=1), T0 + timedelta(days=1))
        async with JetStreamEventLog(nats_server.url, clock=MovableClock()) as log:
            kinds = ["order.created", "payment.done"]
            await log.append([new_event(f"a{i}", event_type=kinds[i % 2]) for i in range(10)])
            async with JetStreamArchiveStore(nats_server.url) as store:
                await Archiver(log, store, control).run(burst=True)
                first = await store.read_window(record.uid, *wide)
            await log.append([new_event(f"b{i}", event_type=kinds[i % 2]) for i in range(10)])
            async with JetStreamArchiveStore(nats_server.url) as store:
                await Archiver(log, store, control).run(burst=True)
                every = await store.read_window(record.uid, *wide)
                assert await store.cursor(ACME_DEFAULT) == await log.last_position(ACME_DEFAULT)
                assert (await store.stats([record.uid]))[record.uid].events == 10
    finally:
        await control.close()

    assert [e.id for e in first] == [f"a{i}" for i in range(0, 10, 2)]
    assert [e.id for e in every] == [*(e.id for e in first), *(f"b{i}" for i in range(0, 10, 2))]


async def test_three_replicas_keep_archiving_through_a_node_killed(
    nats_cluster: NatsCluster,
) -> None:
    store = JetStreamArchiveStore(
        nats_cluster.url, replicas=3, request_timeout=2.0, ack_timeout=2.0
    )
    async with store:
        # A new R3 stream may not take writes for a moment (its subject interest is still
        # spreading through the cluster): the first write waits, as the archiver would retry.
        await eventually(
            lambda: store.archive(ACME_DEFAULT, 10, [("a1", stored(p)) for p in range(1, 11)])
        )
        for stream in (store.layout.copies_stream, store.layout.table_stream):
            info = await js_api(nats_cluster.urls[0], f"$JS.API.STREAM.INFO.{stream}")
            assert info["config"]["num_replicas"] == 3

        nats_cluster.servers[0].kill()
        await eventually(lambda: store.archive(ACME_DEFAULT, 20, [("a1", stored(20))]))

        assert await eventually(lambda: store.cursor(ACME_DEFAULT)) == 20
        got = await eventually(lambda: read_all(store, "a1"))
        assert [e.position for e in got] == [*range(1, 11), 20]
        size = sum(len(stored(p).body) for p in [*range(1, 11), 20])
        assert (await store.stats(["a1"]))["a1"] == ArchiveStats(11, size)

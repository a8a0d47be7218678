"""The replay runner on real stores: SQLite log, archive store, delivery queue and control plane.

The archive is filled by the store's own `archive` call (the archiver's step), so these tests
need no archiver running; the end-to-end tests in tests/e2e/test_replays.py run the whole app.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from tests.storage.eventlog_support import T0, MovableClock, new_event

from stellwerk.patterns import Matcher
from stellwerk.refs import BusRef, TenantId, TenantName
from stellwerk.routing import RouteTarget, RuleSet
from stellwerk.routing.replay import (
    NoReplayHooks,
    Pacer,
    ReplayRunner,
    narrowed,
    replay_deliveries,
    replay_name_suffix,
    with_replay_name,
)
from stellwerk.seams import ArchivedEvent, LeasedDelivery, ReplayCursor
from stellwerk.storage.archive.sqlite import SqliteArchiveStore
from stellwerk.storage.control import ArchiveRecord, ControlPlane, NewReplay, ReplayRecord
from stellwerk.storage.eventlog.sqlite import SqliteEventLog
from stellwerk.storage.pipeline import prepare
from stellwerk.storage.queue.sqlite import SqliteDeliveryQueue, give_archived_bytes
from stellwerk.storage.sqlite import LOG_DIR, PIPELINE_FILE, Engine
from stellwerk.transform import InputTransformer

ACME_DEFAULT = BusRef(TenantName("acme"), "default")

WINDOW = (T0, T0 + timedelta(minutes=30))


class WatchedArchiveStore(SqliteArchiveStore):
    """The real store, counting how often the archiver's cursor is asked for."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine, before_delete=give_archived_bytes)
        self.cursor_calls = 0
        self.asked = asyncio.Condition()

    async def cursor(self, bus: BusRef) -> int:
        position = await super().cursor(bus)
        async with self.asked:
            self.cursor_calls += 1
            self.asked.notify_all()
        return position


@dataclass
class Setup:
    control: ControlPlane
    tenant_id: TenantId
    archive: ArchiveRecord
    log: SqliteEventLog
    archives: WatchedArchiveStore
    queue: SqliteDeliveryQueue
    rules: RuleSet
    clock: MovableClock

    def runner(self, **kwargs: Any) -> ReplayRunner:
        options: dict[str, Any] = {
            "rate": 0,
            "max_running": 2,
            "poll_seconds": 0.05,
            "idle_poll_seconds": 0.05,
        }
        return ReplayRunner(
            self.control,
            self.archives,
            self.log,
            self.queue,
            lambda bus: self.rules,
            **{**options, **kwargs},
        )

    async def record(self, count: int, *, minutes: float = 0, archive: bool = True) -> None:
        """`count` events recorded `minutes` after T0, archived unless told otherwise."""
        self.clock.now = T0 + timedelta(minutes=minutes)
        first = await self.log.last_position(ACME_DEFAULT)
        await self.log.append([new_event(f"m{minutes}-{n}") for n in range(count)])
        if archive:
            await self.archive_log(after=first)

    async def archive_log(self, *, after: int = 0) -> None:
        """What the archiver does: copy the log's new events into the archive, with its cursor."""
        events = await self.log.read(ACME_DEFAULT, after=after, limit=100_000)
        entries = [(self.archive.uid, event) for event in events]
        await self.archives.archive(ACME_DEFAULT, events[-1].position, entries)

    async def create(self, name: str, rules: list[str] | None = None, **kwargs: Any) -> None:
        replay = NewReplay(
            name=name,
            bus="default",
            archive=self.archive.name,
            archive_uid=self.archive.uid,
            start=WINDOW[0],
            end=WINDOW[1],
            rules=rules,
        )
        await self.control.replays.create(self.tenant_id, replay, **{"max_running": 2, **kwargs})

    async def get(self, name: str) -> ReplayRecord:
        record = await self.control.replays.get(self.tenant_id, name)
        assert record is not None
        return record

    async def leased(self) -> list[LeasedDelivery]:
        return await self.queue.lease(self.clock() + timedelta(days=1), 100_000, 60)


def rule_set() -> RuleSet:
    matcher = Matcher()
    matcher.add("orders", {"type": ["order.created"]})
    matcher.add("everything", {"source": ["/orders"]})
    matcher.add("live-only", {"replayname": [{"exists": False}]})
    targets = {
        "orders": [RouteTarget("hook")],
        "everything": [
            RouteTarget(
                "shaped",
                transformer=InputTransformer({"r": "$.replayname"}, '{"replay": <r>}'),
            )
        ],
        "live-only": [RouteTarget("hook")],
    }
    return RuleSet(matcher, targets)


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    clock = MovableClock()
    control = await ControlPlane.open(f"sqlite+aiosqlite:///{tmp_path / 'control.db'}")
    tenant = await control.create_tenant("acme")
    archive, _ = await control.archives.put(
        tenant.id,
        "default",
        "all",
        pattern=None,
        retention_days=0,
        description="",
        start_position=0,
        max_archives=10,
    )
    # Both stores on one engine, as in `stellwerk serve`: replayed deliveries point at the
    # archived copies.
    engine = Engine(tmp_path / PIPELINE_FILE, setup=[functools.partial(prepare, data_dir=tmp_path)])
    try:
        async with (
            SqliteEventLog(tmp_path / LOG_DIR, clock=clock) as log,
            WatchedArchiveStore(engine) as archives,
            SqliteDeliveryQueue(engine, clock=clock, archive_here=True) as queue,
        ):
            yield Setup(control, tenant.id, archive, log, archives, queue, rule_set(), clock)
    finally:
        await control.close()


async def test_a_replay_sends_its_window_to_the_chosen_rules_with_replayname(
    setup: Setup,
) -> None:
    await setup.record(3, minutes=-5)  # before the window
    await setup.record(4, minutes=10)
    await setup.record(2, minutes=30)  # the window's end is exclusive
    await setup.create("backfill", rules=["orders"])
    await setup.runner().run(burst=True)
    record = await setup.get("backfill")
    assert (record.state, record.replayed, record.total) == ("completed", 4, 4)
    assert record.finished_at is not None
    leased = await setup.leased()
    assert sorted(d.event_id for d in leased) == [f"m10-{n}" for n in range(4)]
    assert {(d.rule, d.target_id) for d in leased} == {("orders", "hook")}
    for delivery in leased:
        body = msgspec.json.decode(delivery.payload)
        assert body["replayname"] == "backfill"
        assert (body["tenant"], body["bus"]) == ("acme", "default")
    assert await setup.queue.replay_cursor(TenantName("acme"), "backfill") == ReplayCursor(
        (await setup.archives.read_window(setup.archive.uid, *WINDOW))[-1].seq, 4
    )


async def test_all_rules_by_default_as_they_match_a_replayed_event(setup: Setup) -> None:
    await setup.record(2, minutes=1)
    await setup.create("all-rules")
    await setup.runner().run(burst=True)
    leased = await setup.leased()
    # A pattern can tell a replay from live traffic: `live-only` matches no replayed event.
    assert Counter(d.rule for d in leased) == Counter({"orders": 2, "everything": 2})
    shaped = [d for d in leased if d.target_id == "shaped"]
    assert {d.payload for d in shaped} == {b'{"replay": "all-rules"}'}
    assert (await setup.get("all-rules")).state == "completed"


async def test_a_stopped_replay_resumes_from_its_cursor_without_sending_twice(
    setup: Setup,
) -> None:
    await setup.record(50, minutes=1)
    await setup.create("resumed", rules=["orders"])

    class StopAfterFirstBatch(NoReplayHooks):
        def on_replayed(self, tenant: str, events: int, deliveries: int) -> None:
            first.stop()

    first = setup.runner(batch=10, hooks=StopAfterFirstBatch())
    await first.run()
    # Stopping (a shutdown) leaves the replay running, to resume; a crash leaves it so as well.
    assert (await setup.get("resumed")).state == "running"
    assert (await setup.queue.replay_cursor(TenantName("acme"), "resumed")).replayed == 10
    await setup.runner(batch=10).run(burst=True)
    record = await setup.get("resumed")
    assert (record.state, record.replayed, record.total) == ("completed", 50, 50)
    ids = Counter(d.event_id for d in await setup.leased())
    assert len(ids) == 50
    assert set(ids.values()) == {1}


async def test_two_runners_on_one_replay_send_each_event_once(setup: Setup) -> None:
    """Two processes running the same replay for a moment: the one whose batch conflicts goes
    on from the other's cursor, dropping the page it had read ahead."""
    await setup.record(200, minutes=1)
    await setup.create("raced", rules=["orders"])

    await asyncio.gather(
        setup.runner(batch=10).run(burst=True), setup.runner(batch=7).run(burst=True)
    )

    record = await setup.get("raced")
    assert (record.state, record.replayed, record.total) == ("completed", 200, 200)
    ids = Counter(d.event_id for d in await setup.leased())
    assert len(ids) == 200
    assert set(ids.values()) == {1}


async def test_an_idle_runner_starts_a_replay_when_told_not_at_its_next_look(
    setup: Setup,
) -> None:
    # Idle, the runner looks at the control plane only now and then; a replay created through
    # the API reaches it as a change signal (`notify`), and starts at once.
    await setup.record(3, minutes=1)
    looked = asyncio.Event()
    finished: asyncio.Queue[str] = asyncio.Queue()

    class Watch(NoReplayHooks):
        def on_running(self, jobs: int) -> None:
            looked.set()

        def on_finished(self, tenant: str, state: str) -> None:
            finished.put_nowait(state)

    runner = setup.runner(idle_poll_seconds=3600, hooks=Watch())
    task = asyncio.create_task(runner.run())
    try:
        await looked.wait()  # its first look found nothing: it waits, idle
        await setup.create("told", rules=["orders"])
        runner.notify()
        assert await finished.get() == "completed"
    finally:
        runner.close()
        await task
    assert (await setup.get("told")).replayed == 3


async def test_cancel_stops_a_paced_replay(setup: Setup) -> None:
    await setup.record(200, minutes=1)
    await setup.create("slow", rules=["orders"])
    started = asyncio.Event()

    class Started(NoReplayHooks):
        def on_replayed(self, tenant: str, events: int, deliveries: int) -> None:
            started.set()

    # 20 events/s: the window would take ten seconds; the cancel must not wait for that.
    runner = setup.runner(rate=20, hooks=Started())
    task = asyncio.create_task(runner.run(burst=True))
    await asyncio.wait_for(started.wait(), 10)
    cancelled = await setup.control.replays.cancel(setup.tenant_id, "slow")
    assert cancelled is not None
    runner.cancel(setup.tenant_id, "slow")
    await asyncio.wait_for(task, 5)
    record = await setup.get("slow")
    assert record.state == "cancelled"
    sent = (await setup.queue.replay_cursor(TenantName("acme"), "slow")).replayed
    assert 0 < sent < 200
    assert len(await setup.leased()) == sent


async def test_replays_beyond_the_limit_wait_their_turn(setup: Setup) -> None:
    await setup.record(5, minutes=1)
    for name in ("first", "second", "third"):
        await setup.create(name, rules=["orders"], max_running=1)
    assert [(await setup.get(n)).state for n in ("first", "second", "third")] == [
        "running",
        "queued",
        "queued",
    ]
    seen: list[int] = []

    class Running(NoReplayHooks):
        def on_running(self, jobs: int) -> None:
            seen.append(jobs)

    await setup.runner(max_running=1, hooks=Running()).run(burst=True)
    assert [(await setup.get(n)).state for n in ("first", "second", "third")] == ["completed"] * 3
    assert max(seen) == 1
    assert Counter(d.event_id for d in await setup.leased()) == Counter(
        {f"m1-{n}": 3 for n in range(5)}
    )


async def test_a_replay_waits_for_the_archiver_to_catch_up(setup: Setup) -> None:
    await setup.record(2, minutes=1)
    await setup.record(3, minutes=2, archive=False)  # in the log, not yet archived
    await setup.create("patient", rules=["orders"])
    task = asyncio.create_task(setup.runner().run(burst=True))
    # The runner has looked at the archiver's cursor twice, found it behind, and waits.
    async with asyncio.timeout(10), setup.archives.asked:
        await setup.archives.asked.wait_for(lambda: setup.archives.cursor_calls >= 2)
    assert (await setup.queue.replay_cursor(TenantName("acme"), "patient")).replayed == 0
    await setup.archive_log(after=(await setup.archives.cursor(ACME_DEFAULT)))
    await asyncio.wait_for(task, 10)
    record = await setup.get("patient")
    assert (record.state, record.replayed, record.total) == ("completed", 5, 5)


async def test_a_replay_whose_archive_is_deleted_fails_with_the_reason(setup: Setup) -> None:
    await setup.record(3, minutes=1, archive=False)
    await setup.create("orphan")
    await setup.control.archives.delete(setup.tenant_id, "default", "all")
    await setup.runner().run(burst=True)
    record = await setup.get("orphan")
    assert record.state == "failed"
    assert record.error == "archive 'all' was deleted"


def test_the_pacer_holds_a_rate_and_does_not_burst_after_a_stall() -> None:
    now = [0.0]
    pacer = Pacer(100, clock=lambda: now[0])
    assert pacer.delay(50) == pytest.approx(0.5)
    now[0] = 0.5
    assert pacer.delay(50) == pytest.approx(0.5)
    now[0] = 10.0  # a stall: at most one second is made up
    assert pacer.delay(100) == pytest.approx(0.0)
    assert pacer.delay(100) == pytest.approx(1.0)
    assert Pacer(0, clock=lambda: now[0]).delay(10**9) == 0.0


def test_replayname_is_added_last_and_wins() -> None:
    body = b'{"id":"e1","replayname":"forged","data":{"a":1}}'
    replayed = msgspec.json.decode(with_replay_name(body, replay_name_suffix("mine")))
    assert replayed == {"id": "e1", "replayname": "mine", "data": {"a": 1}}
    with pytest.raises(ValueError, match="not a JSON object"):
        with_replay_name(b"[1]", replay_name_suffix("mine"))


def test_a_replay_of_no_rules_builds_nothing() -> None:
    record = ReplayRecord(
        tenant_id=TenantId("t"),
        name="r",
        bus="default",
        archive="a",
        archive_uid="u",
        start=T0,
        end=T0,
        rules=None,
        description="",
        state="running",
        total=0,
        replayed=0,
        error=None,
        created_at=T0,
        updated_at=T0,
        finished_at=None,
    )
    event = ArchivedEvent("u", 1, 1, "e1", "/s", "t", None, T0, b"{}")
    assert replay_deliveries(TenantName("acme"), record, RuleSet(Matcher()), [event]) == []


def test_a_replay_to_some_rules_matches_only_those_that_exist_now() -> None:
    rules = rule_set()
    chosen = narrowed(rules, ["orders", "gone"])  # `gone` was deleted or disabled since
    assert list(chosen.matcher.names) == ["orders"]
    assert dict(chosen.targets) == {"orders": rules.targets["orders"]}
    assert len(narrowed(rules, ["gone"]).matcher) == 0


def stored_rows(setup: Setup) -> list[tuple[str, int, int | None]]:
    """What the queue's file holds per delivery: target, payload bytes, the archived copy."""
    with contextlib.closing(sqlite3.connect(setup.queue.path)) as conn:
        return conn.execute(
            "SELECT t.target_id, length(d.payload), d.archived FROM deliveries AS d"
            " JOIN targets AS t USING (target) ORDER BY d.id"
        ).fetchall()


async def replayed_to_orders(setup: Setup, name: str) -> None:
    """Three events recorded a minute apart, replayed to the `orders` rule to the end."""
    await setup.record(3, minutes=1)
    await setup.create(name, rules=["orders"])
    await setup.runner().run(burst=True)


async def test_a_replayed_delivery_stores_only_the_replay_name_and_is_leased_whole(
    setup: Setup,
) -> None:
    await setup.record(3, minutes=1)
    await setup.create("lean")
    await setup.runner().run(burst=True)
    archived = {e.id: e for e in await setup.archives.read_window(setup.archive.uid, *WINDOW)}
    suffix = replay_name_suffix("lean")
    rows = stored_rows(setup)
    # The event itself: a pointer and the replay name; a transformer's output: a copy.
    assert sorted(r for r in rows if r[0] == "hook") == sorted(
        ("hook", len(suffix), e.seq) for e in archived.values()
    )
    assert {(r[1] > 0, r[2]) for r in rows if r[0] == "shaped"} == {(True, None)}
    leased = [d for d in await setup.leased() if d.target_id == "hook"]
    assert sorted(d.payload for d in leased) == sorted(
        with_replay_name(e.body, suffix) for e in archived.values()
    )


async def test_a_replayed_delivery_keeps_its_payload_when_its_archived_copy_goes(
    setup: Setup,
) -> None:
    await replayed_to_orders(setup, "kept")
    leased = await setup.leased()
    payloads = {d.event_id: d.payload for d in leased}
    assert len(payloads) == 3
    await setup.queue.dead_letter(leased[0].id, "gave up")
    await setup.queue.release([d.id for d in leased[1:]])
    dead = await setup.queue.dead_letters(ACME_DEFAULT)
    assert [(d.event_id, d.payload) for d in dead] == [
        (leased[0].event_id, payloads[leased[0].event_id])
    ]

    await setup.archives.drop(setup.archive.uid)  # the copies go; the deliveries get the bytes

    assert {r[2] for r in stored_rows(setup)} == {None}
    again = await setup.leased()
    assert {d.event_id: d.payload for d in again} == {
        e: p for e, p in payloads.items() if e != leased[0].event_id
    }
    dead = await setup.queue.dead_letters(ACME_DEFAULT)
    assert [d.payload for d in dead] == [payloads[leased[0].event_id]]


async def test_an_erasure_finds_the_data_of_a_replayed_delivery_in_its_archived_copy(
    setup: Setup,
) -> None:
    await replayed_to_orders(setup, "erased")
    erased = await setup.queue.erase(
        TenantName("acme"), "default", (), b'"m1-1"', lambda payload, content_type: True
    )
    assert erased.pending == 1
    assert sorted(d.event_id for d in await setup.leased()) == ["m1-0", "m1-2"]


async def test_a_replayed_delivery_keeps_its_payload_when_its_copy_is_erased_from_the_archive(
    setup: Setup,
) -> None:
    await replayed_to_orders(setup, "before-erasure")
    leased = await setup.leased()
    payloads = {d.event_id: d.payload for d in leased}
    await setup.queue.release([d.id for d in leased])

    gone = await setup.archives.erase([setup.archive.uid], b'"m1-1"', lambda event: True)

    # The archive's erasure takes only its copy; the queue's own erasure takes the delivery.
    assert [e.id for e in gone] == ["m1-1"]
    assert sorted(r[2] is None for r in stored_rows(setup)) == [False, False, True]
    assert {d.event_id: d.payload for d in await setup.leased()} == payloads

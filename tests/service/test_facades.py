"""The service layer's facades, called directly (no HTTP): what they refuse, and what they
announce through the control plane once a write commits."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from stellwerk.auth import Principal, Scope
from stellwerk.erasure import Suppressions
from stellwerk.ingest import BindingLimits, IngestMetrics
from stellwerk.ops import Metrics
from stellwerk.refs import BusRef, TenantName, TenantRef
from stellwerk.seams import AppendResult, Change, NewEvent
from stellwerk.service import (
    Authenticator,
    Buses,
    BusInput,
    Conflict,
    Forbidden,
    Gate,
    Grants,
    Ingest,
    IngestResult,
    InvalidRequest,
    NotFound,
    Quotas,
    ReplayInput,
    Replays,
    Tail,
    TooManyRequests,
    ValidationFailed,
    provision_tenant,
)
from stellwerk.storage import LogWatch
from stellwerk.storage.control import BusDirectory, ControlPlane
from stellwerk.storage.eventlog.sqlite import SqliteEventLog
from stellwerk.storage.queue.sqlite import SqliteDeliveryQueue
from stellwerk.storage.sqlite import DELIVERIES_FILE, LOG_DIR

BATCH = "application/cloudevents-batch+json"


@pytest.fixture
async def control(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    plane = await ControlPlane.open(f"sqlite+aiosqlite:///{tmp_path / 'control.db'}")
    yield plane
    await plane.close()


async def admin_of(control: ControlPlane, name: str) -> Principal:
    tenant = await control.create_tenant(name)
    return Principal(tenant.ref, key_id="k", scope=Scope.ADMIN)


async def test_a_committed_change_is_announced_and_a_refused_one_is_not(
    control: ControlPlane,
) -> None:
    heard: list[Change] = []

    async def listener(change: Change) -> None:
        heard.append(change)

    control.changes.listen(listener)
    acme = await admin_of(control, "acme")
    buses = Buses(control, max_buses=2)  # `default` and one more

    await buses.put(acme, "orders", BusInput(description="new"))
    assert heard == [Change("bus", acme.tenant_id, "orders")]

    with pytest.raises(Conflict) as over:
        await buses.put(acme, "audit", BusInput())
    assert over.value.code == "LimitExceeded"
    with pytest.raises(NotFound):
        await buses.delete(acme, "nothing-here")
    assert heard == [Change("bus", acme.tenant_id, "orders")]  # the rollbacks told nobody

    await buses.delete(acme, "orders")
    assert heard[-1] == Change("bus", acme.tenant_id, "orders")
    assert len(heard) == 2


async def test_a_bus_description_too_long_is_refused_naming_the_field(
    control: ControlPlane,
) -> None:
    acme = await admin_of(control, "acme")
    with pytest.raises(ValidationFailed) as refused:
        await Buses(control, max_buses=10).put(acme, "orders", BusInput(description="x" * 513))
    assert refused.value.field == "$.description"
    assert await control.get_bus(acme.tenant_id, "orders") is None


async def test_a_revoked_grant_is_announced_by_tenant_names(control: ControlPlane) -> None:
    heard: list[Change] = []

    async def listener(change: Change) -> None:
        heard.append(change)

    control.changes.listen(listener)
    acme = await admin_of(control, "acme")
    await control.create_tenant("globex")
    grants = Grants(control, Buses(control, max_buses=10))
    with pytest.raises(InvalidRequest, match="no grant for its own"):
        await grants.grant(acme, "default", "acme")
    assert await grants.grant(acme, "default", "globex") is True
    assert await grants.grant(acme, "default", "globex") is False
    assert heard == []  # a new grant needs nobody to forget anything
    await grants.revoke(acme, "default", "globex")
    assert heard == [Change("grant", "acme", "default", "globex")]
    with pytest.raises(NotFound):
        await grants.revoke(acme, "default", "globex")


async def test_the_gate_checks_key_then_scope_then_rate(control: ControlPlane) -> None:
    provisioned = await provision_tenant(control, "acme")
    gate = Gate(Authenticator(control), Quotas(control).rate("requests", "requests_per_second", 1))
    ingest = f"Bearer {provisioned.ingest_key}"
    with pytest.raises(Forbidden, match=r"may not PUT here \(needs admin\)"):
        await gate.admit(ingest, "PUT", Scope.ADMIN)
    principal = await gate.admit(ingest, "POST", Scope.INGEST)
    assert (principal.tenant, principal.scope) == ("acme", Scope.INGEST)
    with pytest.raises(TooManyRequests) as limited:
        await gate.admit(ingest, "POST", Scope.INGEST)
    assert limited.value.retry_after_seconds == 1


async def test_a_replay_is_checked_whole_before_it_is_recorded(
    control: ControlPlane, tmp_path: Path
) -> None:
    acme = await admin_of(control, "acme")
    await control.put_bus(acme.tenant_id, "audit")
    await control.archives.put(
        acme.tenant_id,
        "default",
        "all",
        pattern=None,
        retention_days=0,
        description="",
        start_position=0,
        max_archives=5,
    )
    async with SqliteDeliveryQueue(tmp_path / DELIVERIES_FILE) as queue:
        replays = Replays(control, queue, max_running=1)
        now = datetime.now(UTC)
        window = {
            "start": (now - timedelta(hours=1)).isoformat(),
            "end": (now - timedelta(minutes=1)).isoformat(),
        }

        def body(**changes: object) -> ReplayInput:
            values: dict[str, object] = {
                "name": "r1",
                "archive": "all",
                "bus": "default",
                **window,
                **changes,
            }
            return ReplayInput(**values)  # type: ignore[arg-type]

        with pytest.raises(InvalidRequest) as reversed_window:
            await replays.start(acme, body(start=window["end"], end=window["start"]))
        assert reversed_window.value.field == "end"
        future = (now + timedelta(hours=1)).isoformat()
        with pytest.raises(InvalidRequest, match="reaches into the future"):
            await replays.start(acme, body(end=future))
        with pytest.raises(InvalidRequest, match="does not exist on bus 'default'") as no_archive:
            await replays.start(acme, body(archive="other"))
        assert no_archive.value.field == "archive"
        with pytest.raises(InvalidRequest, match="'r-x' does not exist on bus 'default'"):
            await replays.start(acme, body(rules=["r-x"]))
        assert await control.replays.for_tenant(acme.tenant_id) == []

        started = await replays.start(acme, body())
        assert (started.name, started.state) == ("r1", "running")
        with pytest.raises(Conflict) as again:
            await replays.start(acme, body())
        assert again.value.code == "ResourceAlreadyExists"
        cancelled = await replays.cancel(acme, "r1")
        assert cancelled.state == "cancelled"
        with pytest.raises(NotFound):
            await replays.cancel(acme, "r2")


async def test_ingest_stores_the_valid_events_of_a_batch_and_lists_the_others(
    control: ControlPlane, tmp_path: Path
) -> None:
    acme = await admin_of(control, "acme")
    metrics = Metrics()
    watch = LogWatch()
    heard: list[tuple[str, str]] = []
    watch.subscribe(lambda bus: heard.append((bus.tenant, bus.bus)))
    async with SqliteEventLog(tmp_path / LOG_DIR) as log:
        ingest = Ingest(
            control=control,
            buses=BusDirectory(control),
            event_log=log,
            log_watch=watch,
            suppressions=Suppressions(control.erasures, metrics),
            metrics=IngestMetrics(metrics),
            limits=BindingLimits(),
            event_rate=Quotas(control).rate("events", "events_per_second", 0),
        )
        good = {"specversion": "1.0", "id": "a", "source": "s", "type": "t"}
        bad = {"specversion": "1.0", "id": "b", "source": "s"}  # no type

        async def body(events: object) -> bytes:
            return json.dumps(events).encode()

        answer = await ingest.put(acme, "default", BATCH, {}, lambda: body([good, bad, good]))
        result = msgspec.json.decode(answer, type=IngestResult)
        assert (result.accepted, result.duplicates) == (2, 1)  # the second `a` is a duplicate
        assert [(f.index, f.id) for f in result.failed] == [(1, "b")]
        assert [e.id for e in await log.read(BusRef(TenantName("acme"), "default"))] == ["a"]
        assert heard == [("acme", "default")]  # the router is told

        with pytest.raises(InvalidRequest) as nothing_valid:
            await ingest.put(acme, "default", BATCH, {}, lambda: body([bad]))
        assert nothing_valid.value.extra["accepted"] == 0
        assert nothing_valid.value.extra["failed"][0]["id"] == "b"
        with pytest.raises(NotFound, match="bus 'nowhere'"):
            await ingest.put(acme, "nowhere", BATCH, {}, lambda: body([good]))


async def test_the_tail_gives_a_bus_in_pages_as_they_are_recorded_and_empty_ones_when_quiet(
    control: ControlPlane, tmp_path: Path
) -> None:
    acme = await admin_of(control, "acme")
    watch = LogWatch()
    async with SqliteEventLog(tmp_path / LOG_DIR) as log:
        tail = Tail(BusDirectory(control), log, watch)

        def event(n: int) -> NewEvent:
            return NewEvent(
                TenantName("acme"),
                "default",
                f"e{n}",
                "s",
                "t",
                None,
                b'{"id":"e' + str(n).encode() + b'"}',
            )

        await log.append([event(n) for n in range(5)])
        assert await tail.end(acme, "default") == (await log.read(acme.bus("default")))[-1].position
        pages = tail.pages(acme, "default", 0, keepalive=0.01, limit=3)
        assert [e.id for e in await anext(pages)] == ["e0", "e1", "e2"]
        assert [e.id for e in await anext(pages)] == ["e3", "e4"]
        assert await anext(pages) == []  # nothing new within the keepalive
        await log.append([event(5)])
        watch.appended(acme.bus("default"))
        assert [e.id for e in await anext(pages)] == ["e5"]
        await pages.aclose()
        first = (await tail.page(acme, "default", 0, limit=1))[0]
        assert [e.id for e in await tail.page(acme, "default", first.position, limit=2)] == [
            "e1",
            "e2",
        ]


async def test_the_tail_says_which_event_the_router_routed_last(
    control: ControlPlane, tmp_path: Path
) -> None:
    acme = await admin_of(control, "acme")
    async with (
        SqliteEventLog(tmp_path / LOG_DIR) as log,
        SqliteDeliveryQueue(tmp_path / DELIVERIES_FILE) as queue,
    ):
        tail = Tail(BusDirectory(control), log, LogWatch(), routes=queue)
        assert await tail.routed(acme, "default") is None  # nothing routed yet
        await log.append(
            [
                NewEvent(TenantName("acme"), "default", f"e{n}", "s", "t", None, b'{"n":1}')
                for n in (1, 2)
            ]
        )
        first = (await log.read(acme.bus("default")))[0]
        await queue.route(acme.bus("default"), first.position, [])
        routed = await tail.routed(acme, "default")
        assert routed is not None
        assert (routed.id, routed.recorded_time) == ("e1", first.recorded_time)


async def test_ingest_announces_a_request_to_its_companion_and_awaits_it_once_durable(
    control: ControlPlane, tmp_path: Path
) -> None:
    acme = await admin_of(control, "acme")
    metrics = Metrics()
    async with SqliteEventLog(tmp_path / LOG_DIR) as log:
        ingest = Ingest(
            control=control,
            buses=BusDirectory(control),
            event_log=log,
            log_watch=LogWatch(),
            suppressions=Suppressions(control.erasures, metrics),
            metrics=IngestMetrics(metrics),
            limits=BindingLimits(),
            event_rate=Quotas(control).rate("events", "events_per_second", 0),
        )
        heard: list[tuple[str, str, list[str], list[int], bytes]] = []

        class Companion:
            def __init__(self, tenant: TenantRef, bus: str, batch: Sequence[NewEvent]) -> None:
                self.said = (tenant.name, bus, [e.id for e in batch])
                self.told: tuple[list[int], bytes] | None = None

            def announce(self, results: Sequence[AppendResult], recorded: bytes) -> None:
                stored = [r.position for r in results if not r.duplicate]
                self.told = (stored, recorded)

            async def finish(self) -> None:
                assert self.told is not None  # announced before the append returned
                stored, recorded = self.told
                durable = {e.position: e for e in await log.read(acme.bus(self.said[1]))}
                assert set(stored) <= set(durable)  # durable before it is finished
                for position in stored:
                    assert f'"recordedtime":"{recorded.decode()}"'.encode() in (
                        durable[position].body
                    )
                heard.append((*self.said, stored, recorded))

        ingest.beside_append(Companion)

        async def body(*ids: str) -> bytes:
            return json.dumps(
                [{"specversion": "1.0", "id": i, "source": "s", "type": "t"} for i in ids]
            ).encode()

        await ingest.put(acme, "default", BATCH, {}, lambda: body("a", "b"))
        await ingest.put(acme, "default", BATCH, {}, lambda: body("a", "c"))
        await ingest.put(acme, "default", BATCH, {}, lambda: body("a"))  # all duplicates
        stored = {e.id: e for e in await log.read(acme.bus("default"))}

        def recorded(event_id: str) -> bytes:
            return stored[event_id].body.rsplit(b'"recordedtime":"', 1)[1][:-2]

        assert heard == [
            (
                "acme",
                "default",
                ["a", "b"],
                [stored["a"].position, stored["b"].position],
                recorded("a"),
            ),
            ("acme", "default", ["a", "c"], [stored["c"].position], recorded("c")),
            ("acme", "default", ["a"], [], heard[2][4]),
        ]

"""Erasure records on SQLite and PostgreSQL: the audit trail, suppressions, failed-event erase."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from stellwerk.storage.control import ControlPlane, ErasureState, FailedEventFilter, NewFailedEvent
from stellwerk.storage.control.store import create_engine


class SteppingClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
async def control(database_url: str) -> AsyncIterator[ControlPlane]:
    opened = await ControlPlane.open(database_url)
    await opened.close()
    plane = ControlPlane(create_engine(database_url), clock=SteppingClock())
    yield plane
    await plane.close()


async def test_an_audit_entry_runs_then_finishes_with_its_counts(control: ControlPlane) -> None:
    tenant = await control.create_tenant("acme")
    store = control.erasures
    created = await store.create(
        tenant.id, bus=None, criterion={"subject": "u1"}, suppress=True, requested_by="k1"
    )
    assert created.state is ErasureState.RUNNING
    assert await store.get(tenant.id, created.id) == created

    await store.record_counts(created.id, {"log": 3})
    running = await store.get(tenant.id, created.id)
    assert running is not None
    assert (running.state, running.counts) == (ErasureState.RUNNING, {"log": 3})
    assert [(name, r.id) for name, r in await store.unfinished()] == [("acme", created.id)]

    await store.finish(created.id, ErasureState.COMPLETED, {"log": 3, "archives": 1})
    done = await store.get(tenant.id, created.id)
    assert done is not None
    assert done.state is ErasureState.COMPLETED
    assert done.counts == {"log": 3, "archives": 1}
    assert done.finished_at is not None
    assert done.finished_at > done.requested_at
    assert (done.criterion, done.suppress, done.requested_by) == ({"subject": "u1"}, True, "k1")
    assert await store.unfinished() == []


async def test_entries_are_listed_newest_first_per_tenant_and_paged(
    control: ControlPlane,
) -> None:
    acme = await control.create_tenant("acme")
    other = await control.create_tenant("other")
    store = control.erasures
    ids = [
        (
            await store.create(
                acme.id, bus="default", criterion={"subject": f"u{n}"}, suppress=False,
                requested_by=None,
            )
        ).id
        for n in range(5)
    ]  # fmt: skip
    await store.create(
        other.id, bus=None, criterion={"subject": "x"}, suppress=False, requested_by=None
    )

    first = await store.recent(acme.id, limit=2)
    second = await store.recent(acme.id, before=first[-1].id, limit=2)
    third = await store.recent(acme.id, before=second[-1].id, limit=2)
    assert [r.id for r in first + second + third] == ids[::-1]
    assert await store.get(other.id, ids[0]) is None
    assert await store.recent(acme.id, before="no-such-id") == []


async def test_suppressions_are_kept_per_tenant_and_bus(control: ControlPlane) -> None:
    acme = await control.create_tenant("acme")
    other = await control.create_tenant("other")
    store = control.erasures
    assert not await store.has_suppressions(acme.id, "default")

    keys = [("default", "/app", f"e{n}") for n in range(1200)]
    await store.suppress(acme.id, "erasure-1", keys)
    await store.suppress(acme.id, "erasure-2", [("default", "/app", "e1"), *keys[:3]])

    assert await store.has_suppressions(acme.id, "default")
    assert not await store.has_suppressions(acme.id, "audit")
    assert not await store.has_suppressions(other.id, "default")
    asked = [("/app", "e1"), ("/app", "e1199"), ("/other", "e1"), ("/app", "new")]
    assert await store.suppressed(acme.id, "default", asked) == {("/app", "e1"), ("/app", "e1199")}
    assert await store.suppressed(acme.id, "audit", asked) == set()
    assert await store.suppressed(other.id, "default", asked) == set()


async def test_suppressions_take_sources_and_ids_of_any_allowed_length(
    control: ControlPlane,
) -> None:
    # Together longer than PostgreSQL allows in one index entry (~2.7 KB).
    acme = await control.create_tenant("acme")
    long_source, long_id = "urn:" + "s" * 4000, "i" * 1000
    await control.erasures.suppress(acme.id, "erasure-1", [("default", long_source, long_id)])

    asked = [(long_source, long_id), (long_source, long_id[:-1])]
    assert await control.erasures.suppressed(acme.id, "default", asked) == {(long_source, long_id)}


async def test_failed_events_are_erased_by_body(control: ControlPlane) -> None:
    acme = await control.create_tenant("acme")
    other = await control.create_tenant("other")

    def failed(event_id: str, user: str, bus: str = "default") -> NewFailedEvent:
        body = f'{{"id":"{event_id}","source":"/app","data":{{"user":"{user}"}}}}'.encode()
        return NewFailedEvent(bus, event_id, "/app", "signup", "SchemaValidationFailed", [], body)

    await control.failed_events.add(
        acme.id, [failed("a1", "ann"), failed("b1", "bob"), failed("a2", "ann", "audit")]
    )
    await control.failed_events.add(other.id, [failed("a3", "ann")])
    offered: list[bytes] = []

    def is_ann(body: bytes) -> bool:
        offered.append(body)
        return b'"ann"' in body

    one_bus = await control.failed_events.erase(acme.id, "audit", b"ann", is_ann)
    assert [(r.bus, r.event_id) for r in one_bus] == [("audit", "a2")]
    rest = await control.failed_events.erase(acme.id, None, b"ann", is_ann)
    assert [(r.bus, r.event_id, r.source) for r in rest] == [("default", "a1", "/app")]
    assert all(b"bob" not in body for body in offered)  # no needle, not offered

    left = await control.failed_events.find(acme.id, "default", FailedEventFilter())
    assert [r.event_id for r in left] == ["b1"]
    theirs = await control.failed_events.find(other.id, "default", FailedEventFilter())
    assert [r.event_id for r in theirs] == ["a3"]

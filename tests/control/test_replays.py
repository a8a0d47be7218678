"""Replay records on SQLite and PostgreSQL: slots, states that only move forward, tenant scope."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from stellwerk.storage.control import ConflictError, ControlPlane, NewReplay

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def control(database_url: str) -> AsyncIterator[ControlPlane]:
    plane = await ControlPlane.open(database_url)
    yield plane
    await plane.close()


def replay(name: str, rules: list[str] | None = None) -> NewReplay:
    return NewReplay(
        name=name,
        bus="default",
        archive="all",
        archive_uid="uid-1",
        start=T0,
        end=T0 + timedelta(hours=1),
        rules=rules,
        description="backfill",
    )


async def test_create_get_and_list_are_scoped_by_tenant(control: ControlPlane) -> None:
    acme = await control.create_tenant("acme")
    globex = await control.create_tenant("globex")
    created = await control.replays.create(acme.id, replay("r1", ["a", "b"]), max_running=2)
    assert (created.state, created.total, created.replayed) == ("running", 0, 0)
    assert (created.start, created.end, created.rules) == (T0, T0 + timedelta(hours=1), ["a", "b"])
    assert await control.replays.get(acme.id, "r1") == created
    assert await control.replays.get(globex.id, "r1") is None
    # The same name in another tenant is another replay; in the same tenant it is a conflict.
    other = await control.replays.create(globex.id, replay("r1"), max_running=2)
    assert other.rules is None
    with pytest.raises(ConflictError, match="already exists"):
        await control.replays.create(acme.id, replay("r1"), max_running=2)
    assert [r.name for r in await control.replays.for_tenant(acme.id)] == ["r1"]
    assert await control.replays.cancel(globex.id, "nope") is None


async def test_replays_beyond_the_slots_wait_and_are_promoted_in_order(
    control: ControlPlane,
) -> None:
    acme = await control.create_tenant("acme")
    states = [
        (await control.replays.create(acme.id, replay(f"r{n}"), max_running=2)).state
        for n in range(4)
    ]
    assert states == ["running", "running", "queued", "queued"]
    assert await control.replays.promote(2) == 0
    assert await control.replays.finish(acme.id, "r0", "completed", replayed=5)
    assert await control.replays.promote(2) == 1
    running = await control.replays.running()
    assert [(tenant, r.name) for tenant, r in running] == [("acme", "r1"), ("acme", "r2")]
    assert (await control.replays.get(acme.id, "r3")) is not None
    assert [r.name for r in await control.replays.for_tenant(acme.id, state="queued")] == ["r3"]


async def test_states_only_move_forward(control: ControlPlane) -> None:
    acme = await control.create_tenant("acme")
    await control.replays.create(acme.id, replay("r1"), max_running=1)
    assert await control.replays.progress(acme.id, "r1", replayed=3, total=10) == "running"
    cancelled = await control.replays.cancel(acme.id, "r1")
    assert cancelled is not None
    assert (cancelled.state, cancelled.replayed, cancelled.total) == ("cancelled", 3, 10)
    assert cancelled.finished_at is not None
    # The runner, a moment late, finds the replay cancelled: its progress and finish do nothing.
    assert await control.replays.progress(acme.id, "r1", replayed=7) == "cancelled"
    assert not await control.replays.finish(acme.id, "r1", "completed", replayed=10)
    again = await control.replays.get(acme.id, "r1")
    assert again is not None
    assert (again.state, again.replayed) == ("cancelled", 3)
    # A finished replay cannot be cancelled any more.
    await control.replays.create(acme.id, replay("r2"), max_running=1)
    assert await control.replays.finish(acme.id, "r2", "failed", replayed=0, error="boom")
    failed = await control.replays.cancel(acme.id, "r2")
    assert failed is not None
    assert (failed.state, failed.error) == ("failed", "boom")

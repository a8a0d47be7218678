"""The role supervisor runs the duties of the roles a process plays, and stops them: asked
first, cancelled when they do not end."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.conftest import app_running

from stellwerk.config import Role, load_settings
from stellwerk.roles import EVERY_ROLE, Duty, RoleSupervisor, roles_of


class Loop:
    """A duty's loop that ends when asked (`polite`) or only when cancelled."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.stopping = asyncio.Event()
        self.cancelled = False

    async def run(self) -> None:
        self.started.set()
        try:
            await self.stopping.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise

    def stop(self) -> None:
        self.stopping.set()


def test_all_plays_every_role_and_one_role_plays_itself() -> None:
    assert roles_of(Role.ALL) == EVERY_ROLE
    assert roles_of(Role.ROUTER) == frozenset({Role.ROUTER})


def test_the_gateway_and_pipeline_processes_together_play_every_role() -> None:
    assert roles_of(Role.PIPELINE) == {Role.ROUTER, Role.DELIVERY, Role.SCHEDULER}
    assert roles_of(Role.GATEWAY) | roles_of(Role.PIPELINE) == EVERY_ROLE


async def test_only_the_roles_played_run_and_each_is_asked_before_it_is_cancelled() -> None:
    polite, stubborn, elsewhere = Loop(), Loop(), Loop()
    duties = {
        Role.ROUTER: [Duty("polite", polite.run, polite.stop, ends=True)],
        Role.DELIVERY: [Duty("stubborn", stubborn.run)],  # no stop: cancelled
        Role.SCHEDULER: [Duty("elsewhere", elsewhere.run, elsewhere.stop, ends=True)],
    }
    supervisor = RoleSupervisor(duties, {Role.ROUTER, Role.DELIVERY}, grace=5.0)
    assert supervisor.plays(Role.ROUTER)
    assert not supervisor.plays(Role.SCHEDULER)
    supervisor.start()
    async with asyncio.timeout(5):
        await polite.started.wait()
        await stubborn.started.wait()
    assert not elsewhere.started.is_set()

    async with asyncio.timeout(4):  # well inside the grace: nothing waits for the stubborn one
        await supervisor.stop()
    assert polite.stopping.is_set()
    assert not polite.cancelled
    assert stubborn.cancelled


async def test_a_duty_that_does_not_end_when_asked_is_cancelled_after_the_grace() -> None:
    deaf = Loop()

    def ignore() -> None:
        pass

    supervisor = RoleSupervisor(
        {Role.ROUTER: [Duty("deaf", deaf.run, ignore, ends=True)]}, {Role.ROUTER}, grace=0.05
    )
    supervisor.start()
    async with asyncio.timeout(5):
        await deaf.started.wait()
        await supervisor.stop()
    assert deaf.cancelled


async def test_a_supervisor_stopped_before_it_started_asks_its_duties_and_returns() -> None:
    """A start that fails after the roles were set up closes them unstarted (found as a
    `zip()` error that left the log's lock taken, so that the next start waited for itself)."""
    polite, stubborn = Loop(), Loop()
    supervisor = RoleSupervisor(
        {
            Role.ROUTER: [Duty("polite", polite.run, polite.stop, ends=True)],
            Role.DELIVERY: [Duty("stubborn", stubborn.run)],
        },
        {Role.ROUTER, Role.DELIVERY},
        grace=5.0,
    )
    async with asyncio.timeout(4):  # nothing started, so nothing to wait for
        await supervisor.stop()
    assert polite.stopping.is_set()
    assert not polite.started.is_set()
    assert not stubborn.started.is_set()


async def test_a_gateway_beside_a_pipeline_does_not_tell_a_router_it_does_not_run(
    tmp_path: Path,
) -> None:
    """The router and the archiver follow appends where they run; a gateway's append is heard
    by the pipeline process through the signals, and wakes nothing of its own."""
    settings = load_settings({"data_dir": str(tmp_path / "data"), "role": "gateway"})
    async with app_running(settings) as running:
        answer = await running.client.post(
            "/v1/buses/default/events",
            json={"specversion": "1.0", "id": "e1", "source": "/t", "type": "t.x"},
            headers=running.auth(running.bootstrap.ingest_key),
        )
        assert answer.status_code == 202
        pipeline = running.services.pipeline
        assert not pipeline.router.appended.is_set()
        assert not pipeline.archiver.appended.is_set()

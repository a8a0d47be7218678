"""The roles a process plays, what each one runs, and starting and stopping them together.

A role is a set of duties: loops that run until asked to stop. The gateway has none of its own
(it answers HTTP); the router follows buses into the delivery queue and the archives; delivery
works the queue; the scheduler, one at a time under a lease, runs retention, replays and
erasures a stop cut short. `RoleSupervisor` takes the roles a process plays as a set, so that
one process can play all of them (`--role all`) or a parent can give each child a part of them
(a gateway process and a pipeline process on one data directory).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable, Collection, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from stellwerk.config import Role
from stellwerk.erasure import ErasureRunner
from stellwerk.retention import Retention
from stellwerk.routing import ReplayRunner
from stellwerk.seams import Leases, while_held

SCHEDULER_LEASE: Final = "scheduler"
# How long a stopping duty may take to finish the step it is in before it is cancelled.
STOP_GRACE_SECONDS: Final = 10.0
# The roles `--role all` plays in one process.
EVERY_ROLE: Final = frozenset({Role.GATEWAY, Role.ROUTER, Role.DELIVERY, Role.SCHEDULER})
# The roles embedded mode's pipeline process plays (the gateway process plays the gateway).
PIPELINE_ROLES: Final = frozenset({Role.ROUTER, Role.DELIVERY, Role.SCHEDULER})


def roles_of(role: Role) -> frozenset[Role]:
    """The roles a process started with `--role role` plays."""
    if role is Role.ALL:
        return EVERY_ROLE
    if role is Role.PIPELINE:
        return PIPELINE_ROLES
    return frozenset({role})


@dataclass(frozen=True, slots=True)
class Duty:
    """A loop a role runs: `run()` as a task; `stop()` asks it to end after the step it is in
    (None: it is cancelled), and is awaited if it returns an awaitable. `ends`: the loop returns
    by itself once asked (else it is cancelled once `stop()` is done)."""

    name: str
    run: Callable[[], Coroutine[Any, Any, None]]
    stop: Callable[[], Awaitable[None] | None] | None = None
    ends: bool = False


class RoleSupervisor:
    """Starts the duties of the roles this process plays, and stops them: first asking every
    duty to end, then cancelling those still running after `grace` seconds.

    Asking first matters: a control-plane query cancelled halfway leaves SQLAlchemy's aiosqlite
    adapter closing its connection forever (seen as tests whose event loop never shut down).
    """

    def __init__(
        self,
        duties: Mapping[Role, Sequence[Duty]],
        roles: Collection[Role],
        *,
        grace: float = STOP_GRACE_SECONDS,
    ) -> None:
        self.roles = frozenset(roles)
        self._duties = [duty for role in sorted(self.roles) for duty in duties.get(role, ())]
        self._grace = grace
        self._running: list[tuple[asyncio.Task[None], Duty]] = []

    def plays(self, role: Role) -> bool:
        return role in self.roles

    def start(self) -> None:
        self._running = [(asyncio.create_task(d.run(), name=d.name), d) for d in self._duties]

    async def stop(self) -> None:
        """Also before `start`: a start that fails part of the way closes what it opened."""
        asked = []
        for duty in self._duties:
            if duty.stop is not None:
                stopping = duty.stop()
                if inspect.isawaitable(stopping):
                    asked.append(asyncio.ensure_future(stopping))
        tasks = [task for task, _ in self._running]
        ending = [task for task, duty in self._running if duty.ends]
        waiting = [*asked, *ending]
        if waiting:
            await asyncio.wait(waiting, timeout=self._grace)
        for future in [*asked, *tasks]:
            future.cancel()
        for future in [*asked, *tasks]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await future


class Scheduler:
    """The scheduler role: retention, replays, and erasures a stop cut short, run by the one
    process that holds the scheduler lease; the others stand by and take over."""

    def __init__(
        self,
        leases: Leases,
        retention: Retention,
        replays: ReplayRunner,
        erasures: ErasureRunner,
    ) -> None:
        self._leases = leases
        self._retention = retention
        self._replays = replays
        self._erasures = erasures
        self._closing = False
        self._idle = asyncio.Event()  # set: no scheduling under way
        self._idle.set()

    def duty(self) -> Duty:
        return Duty("scheduler", self.run, self.stop)

    async def run(self) -> None:
        await while_held(self._leases, SCHEDULER_LEASE, self._schedule)

    async def stop(self) -> None:
        """Stop for good, and wait until the work under way has ended."""
        self._closing = True
        self._replays.close()
        self._retention.stop()
        await self._idle.wait()

    async def _schedule(self) -> None:
        if self._closing:
            return
        self._idle.clear()
        self._retention.restart()  # after a lease lost and regained
        try:
            self._erasures.start()
            await asyncio.gather(self._retention.run(), self._replays.run())
        finally:
            self._replays.stop()
            self._retention.stop()
            self._idle.set()

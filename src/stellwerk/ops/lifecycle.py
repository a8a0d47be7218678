"""The phases of a process (starting, ready, draining) that the health probes report.

The HTTP server listens from the first moment, so probes can see a process that is still starting
(migrations, recovery); the services a request needs are handed out only once they are ready.
"""

from __future__ import annotations

import asyncio
import enum
from typing import Generic, TypeVar

S = TypeVar("S")


class Phase(enum.StrEnum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    STOPPED = "stopped"


class NotReadyError(RuntimeError):
    def __init__(self, phase: Phase) -> None:
        self.phase = phase
        super().__init__(f"the server is {phase}")


class Lifecycle(Generic[S]):
    def __init__(self) -> None:
        self.phase = Phase.STARTING
        self._services: S | None = None
        self.last_start_error: str | None = None
        self.failed_starts = 0
        self._started = asyncio.Event()

    @property
    def started(self) -> bool:
        return self._services is not None

    def ready(self, services: S) -> None:
        self._services = services
        self._started.set()
        if self.phase is Phase.STARTING:
            self.phase = Phase.READY

    def drain(self) -> None:
        """Stop reporting ready; requests in flight, and new ones until the listener closes, run."""
        if self.phase is not Phase.STOPPED:
            self.phase = Phase.DRAINING

    def stop(self) -> None:
        self.phase = Phase.STOPPED

    async def wait_started(self) -> S:
        await self._started.wait()
        return self.services

    @property
    def services(self) -> S:
        if self._services is None:
            raise NotReadyError(self.phase)
        return self._services


def cancelled_meanwhile() -> bool:
    """Whether the current task was asked to stop: for a loop that catches `Exception` around
    database calls, since a driver may answer a cancellation with an error of its own (seen:
    SQLAlchemy's aiosqlite adapter), and a loop that logs it and goes on never stops."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0

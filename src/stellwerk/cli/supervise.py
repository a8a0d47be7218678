"""`stellwerk serve` with several processes: a parent that runs a gateway and a pipeline process
on one data directory, restarts them when they die, and stops them together.

The parent prepares the data directory once (migrations, the first tenant, old files moved in),
then starts `serve --role gateway` and, once the gateway is ready, `serve --role pipeline`, with
the same settings (passed in the environment). A child that exits is restarted after a backoff
that doubles while it keeps dying soon after its start. SIGTERM or SIGINT, to the parent or to
the whole process group, drains both children and the parent exits 0 (docs/operations.md,
"Processes (embedded mode)").
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import structlog

from stellwerk.config import Role, Settings, env_of

log = structlog.get_logger("stellwerk.supervisor")

# The environment variable that tells a child who its parent is (and that it has one).
SUPERVISOR_ENV: Final = "STELLWERK_SUPERVISOR_PID"
# Set for a child started ahead of its turn: once loaded it waits for "go" on its stdin.
GATE_ENV: Final = "STELLWERK_START_GATE"
GO: Final = b"go\n"
# The first wait before a restart is `Settings.restart_backoff_seconds` (0.5 s unless set).
MAX_BACKOFF_SECONDS: Final = 30.0
# A child that ran this long before it exited was healthy: its next restart waits the least.
HEALTHY_SECONDS: Final = 60.0
READY_POLL_SECONDS: Final = 0.05
PREPARE_FIRST_RETRY_SECONDS: Final = 0.1
PREPARE_MAX_RETRY_SECONDS: Final = 10.0
PREPARE_REMINDER_SECONDS: Final = 60.0
# After the children's own shutdown time, how long the parent waits before it kills them.
STOP_MARGIN_SECONDS: Final = 15.0
_PR_SET_PDEATHSIG: Final = 1


def ready_marker(data_dir: Path, role: Role) -> Path:
    """The file a supervised child writes (holding its pid) once it is ready."""
    return data_dir / "run" / f"{role}.ready"


def die_with_parent() -> None:
    """In a supervised child: be sent SIGTERM when the parent dies (even by SIGKILL), and stop
    at once if it died before this was arranged."""
    parent = os.environ.get(SUPERVISOR_ENV)
    if parent is None:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("cannot ask to die with the parent", errno=ctypes.get_errno())
    if os.getppid() != int(parent):
        raise SystemExit("stellwerk: the supervising process has ended")


def lower_priority(steps: int) -> None:
    """In the pipeline process, before it starts a thread: run `steps` of `nice` below the
    process that started it (every thread it starts inherits that).

    Acknowledgements are the gateway's and latency-critical; the pipeline's replays, routing and
    deliveries are throughput. On a machine whose cores are all busy, the kernel then runs a
    gateway that wakes before a pipeline that has been running, instead of sharing the core
    evenly (docs/replays.md, "The pipeline runs below the gateway": beside a replay at full
    rate, on 2 busy cores, live p99 fell from a median of 67 ms to 20 where only the CPU
    differed)."""
    if steps:
        os.nice(steps)


def pass_the_gate() -> None:
    """In a child started ahead of its turn, with its code loaded: wait until the parent says
    go; end if the parent goes away first (its end of the pipe closes)."""
    if os.environ.get(GATE_ENV) != "1":
        return
    try:
        said = sys.stdin.buffer.readline()
    except KeyboardInterrupt:
        raise SystemExit(0) from None  # Ctrl-C before its turn came: the stop asked for
    if said != GO:
        raise SystemExit("stellwerk: the supervising process has ended")


def mark_ready(data_dir: Path, role: Role) -> None:
    """Tell the supervisor (if any) that this child is ready."""
    if SUPERVISOR_ENV not in os.environ:
        return
    marker = ready_marker(data_dir, role)
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_name(f".{marker.name}.{os.getpid()}")
    tmp.write_text(f"{os.getpid()}\n")
    tmp.replace(marker)


def child_environment(values: Mapping[str, Any], base: Mapping[str, str]) -> dict[str, str]:
    """The children's environment: the parent's, with every setting it was given (by flag or
    variable) as a variable, but the role and the process count, which are the parent's."""
    env = {k: v for k, v in base.items() if k not in (env_of("role"), env_of("processes"))}
    for name, value in values.items():
        if value is None or name in ("role", "processes"):
            continue
        env[env_of(name)] = str(value).lower() if isinstance(value, bool) else str(value)
    env[SUPERVISOR_ENV] = str(os.getpid())
    return env


@dataclass
class Child:
    """One supervised process of a role, restarted with backoff."""

    role: Role
    command: list[str]
    env: dict[str, str]
    first_backoff: float
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    backoff: float = field(init=False)  # the wait before the next restart
    starts: int = 0

    def __post_init__(self) -> None:
        self.backoff = self.first_backoff

    async def start(self) -> None:
        """Start the process, or let the one loaded ahead of its turn (`load`) go on."""
        gate = self.process.stdin if self.process is not None else None
        if self.process is None or gate is None:
            self.process = await asyncio.create_subprocess_exec(*self.command, env=self.env)
        else:
            with contextlib.suppress(ConnectionError):  # it died meanwhile: _keep sees that
                gate.write(GO)
                await gate.drain()
            gate.close()
            self.process.stdin = None  # passed: a restart is a new process
        self.started_at = time.monotonic()
        self.starts += 1
        log.info("process started", role=str(self.role), pid=self.process.pid)

    async def load(self) -> None:
        """Start the process ahead of its turn: it loads its code (most of a start) and waits
        at the gate (`pass_the_gate`) for `start`."""
        self.process = await asyncio.create_subprocess_exec(
            *self.command, env={**self.env, GATE_ENV: "1"}, stdin=asyncio.subprocess.PIPE
        )

    def signal(self, sig: int) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)


class Supervisor:
    def __init__(self, settings: Settings, values: Mapping[str, Any]) -> None:
        self._settings = settings
        env = child_environment(values, os.environ)
        self._children = [
            Child(role, child_command(role), env, settings.restart_backoff_seconds)
            for role in (Role.GATEWAY, Role.PIPELINE)
        ]
        self._stopping = asyncio.Event()
        self._failed = False

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop, sig)
        # Imported here: the parent needs the stores only for this one step.
        from stellwerk.compose import prepare_data_directory

        if not await self._prepare(prepare_data_directory):
            return 0
        gateway, pipeline = self._children
        watching = [asyncio.create_task(self._keep(gateway))]
        # The pipeline follows a ready gateway: they would only contend for the stores at
        # start. Its code loads meanwhile (seconds; on the other core), so it is ready soon
        # after the gateway rather than a whole start later.
        await pipeline.load()
        if await self._until_ready(gateway):
            watching.append(asyncio.create_task(self._keep(pipeline)))
            if await self._until_ready(pipeline):
                log.info("processes ready", gateway=_pid(gateway), pipeline=_pid(pipeline))
        await self._stopping.wait()
        await self._stop_children()
        for task in watching:
            task.cancel()
        await asyncio.gather(*watching, return_exceptions=True)
        return 1 if self._failed else 0

    async def _prepare(self, prepare: Callable[[Settings], Coroutine[Any, Any, None]]) -> bool:
        """Prepare the data directory, trying again with backoff while it fails (a database
        that is down at start, say); False if stopped first."""
        delay = PREPARE_FIRST_RETRY_SECONDS
        # Said as one process says it (app.py): a line as the failure begins or changes kind, a
        # reminder a minute, so that one alert covers both.
        said: tuple[type[BaseException], float] | None = None
        attempts = 0
        while not self._stopping.is_set():
            preparing = asyncio.create_task(prepare(self._settings))
            stopping = asyncio.create_task(self._stopping.wait())
            await asyncio.wait([preparing, stopping], return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not preparing.done():
                preparing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await preparing
                return False
            error = preparing.exception()
            if error is None:
                if attempts:
                    log.info("started after failed attempts", attempts=attempts)
                return True
            attempts += 1
            reason, now = f"{type(error).__name__}: {error}", time.monotonic()
            if said is None or said[0] is not type(error):
                said = (type(error), now)
                log.error("start failed, retrying", error=reason, retry_in=delay)
            elif now - said[1] >= PREPARE_REMINDER_SECONDS:
                said = (type(error), now)
                log.warning("start still failing", error=reason, attempts=attempts)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()
            delay = min(delay * 2, PREPARE_MAX_RETRY_SECONDS)
        return False

    def _stop(self, sig: int) -> None:
        """Pass the signal on: the children stop as one process would, SIGINT twice included
        (stop now). In a process group that got the signal, they have it already, and a child
        takes a second SIGTERM as the same stop."""
        name = signal.Signals(sig).name
        if self._stopping.is_set():
            log.info("already stopping", signal=name)
        else:
            log.info("stopping the processes", signal=name)
            self._stopping.set()
        for child in self._children:
            child.signal(sig)

    async def _keep(self, child: Child) -> None:
        """Run the child, and run it again after each exit, until the parent stops."""
        while not self._stopping.is_set():
            await child.start()
            assert child.process is not None
            if self._stopping.is_set():
                child.signal(signal.SIGTERM)  # the stop came while it was being started
            code = await child.process.wait()
            if self._stopping.is_set():
                return
            ran = time.monotonic() - child.started_at
            if ran >= HEALTHY_SECONDS:
                child.backoff = child.first_backoff
            delay = child.backoff
            how = {"signal": signal.Signals(-code).name} if code < 0 else {"exit_code": code}
            facts = {"role": str(child.role), "pid": child.process.pid, "restart_in": delay}
            if delay > child.first_backoff:
                log.error(
                    f"{child.role} process keeps exiting soon after it starts; restarting it "
                    f"in {delay:g} s (the wait doubles up to {MAX_BACKOFF_SECONDS:g} s)",
                    ran_seconds=round(ran, 1),
                    starts=child.starts,
                    **facts,
                    **how,
                )
            else:
                log.warning(
                    f"{child.role} process exited; restarting it in {delay:g} s",
                    ran_seconds=round(ran, 1),
                    **facts,
                    **how,
                )
            child.backoff = min(delay * 2, MAX_BACKOFF_SECONDS)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()

    async def _until_ready(self, child: Child) -> bool:
        """Wait until the child's ready marker names its current pid; False if stopping."""
        marker = ready_marker(self._settings.data_dir, child.role)
        while not self._stopping.is_set():
            process = child.process
            if process is not None and process.returncode is None:
                with contextlib.suppress(OSError, ValueError):
                    if int(marker.read_text().strip()) == process.pid:
                        return True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(READY_POLL_SECONDS):
                    await self._stopping.wait()
        return False

    async def _stop_children(self) -> None:
        settings = self._settings
        patience = settings.drain_seconds + settings.shutdown_timeout_seconds + STOP_MARGIN_SECONDS
        running = [c for c in self._children if c.process is not None]
        waits = [asyncio.create_task(c.process.wait()) for c in running if c.process is not None]
        if not waits:
            return
        _done, late = await asyncio.wait(waits, timeout=patience)
        if late:
            for child in running:
                if child.process is not None and child.process.returncode is None:
                    log.error("process did not stop in time; killing it", role=str(child.role))
                    child.signal(signal.SIGKILL)
            await asyncio.wait(waits)
        for child in running:
            assert child.process is not None
            code = child.process.returncode
            # -SIGTERM: ended by the signal it was sent before its own handler was in place
            # (still starting); that is the stop that was asked for.
            if code not in (0, None, -signal.SIGTERM):
                self._failed = True
                log.error("process stopped with an error", role=str(child.role), exit_code=code)
        log.info("processes stopped")


def child_command(role: Role) -> list[str]:
    return [sys.executable, "-m", "stellwerk", "serve", "--role", str(role)]


def _pid(child: Child) -> int | None:
    return child.process.pid if child.process is not None else None


def supervise(settings: Settings, values: Mapping[str, Any]) -> int:
    """Run the processes of `settings` until SIGTERM or SIGINT; the exit status."""
    import uvloop

    return uvloop.run(Supervisor(settings, values).run())

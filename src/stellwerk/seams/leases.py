"""Leases: each bus routed (and archived) by one process at a time, each singleton run once.

A process says which names it wants (`want`) and asks `holds(name)` before doing a lease's work.
`LocalLeases` is the embedded mode (one process holds everything); `JetStreamLeases` in
`stellwerk.storage.leases` keeps them in JetStream (docs/scale-out.md, "Leases").
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Final, Protocol

import structlog

from stellwerk.refs import BusRef

DEFAULT_TTL: Final = 15.0
log = structlog.get_logger("stellwerk.leases")

NameSource = Callable[[], Iterable[str]]
"""Asked on each round of the keeper: the lease names a part of the process wants now."""


class Leases(Protocol):
    """Named leases held by this process (`holder`), each by at most one process at a time."""

    @property
    def holder(self) -> str:
        """Who this process is, in the lease records (unique per process)."""
        ...

    @property
    def ttl(self) -> float:
        """Seconds a lease lasts without renewal (renewed every third of it)."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None:
        """Stop, releasing what is held so that a successor takes over at once."""
        ...

    def holds(self, name: str) -> bool:
        """Whether the lease is ours and surely not yet expired for anyone else (no I/O)."""
        ...

    def want(self, source: NameSource) -> Callable[[], None]:
        """Add a source of wanted names; the callable returned removes it again."""
        ...

    def wake(self) -> None:
        """A source wants other names now: look at them soon rather than at the next round."""
        ...


class LocalLeases:
    """The embedded mode: one process, so it holds every lease and writes nothing."""

    holder = "local"
    ttl = DEFAULT_TTL

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def holds(self, name: str) -> bool:
        return True

    def want(self, source: NameSource) -> Callable[[], None]:
        return lambda: None

    def wake(self) -> None:
        pass


def lease_name(role: str, bus: BusRef) -> str:
    """The lease of one bus for one role: `router/<tenant>/<bus>`, `archiver/<tenant>/<bus>`."""
    return f"{role}/{bus.tenant}/{bus.bus}"


def role_of(name: str) -> str:
    return name.partition("/")[0]


def bus_owner(
    leases: Leases, role: str, buses: Callable[[], Iterable[BusRef]]
) -> Callable[[BusRef], bool]:
    """Want the lease of every bus `buses()` names for `role`; return the router's or archiver's
    `owns(bus)`: whether this process holds that bus's lease now."""
    leases.want(lambda: [lease_name(role, bus) for bus in buses()])
    return lambda bus: leases.holds(lease_name(role, bus))


def rendezvous_winner(name: str, members: Iterable[str]) -> str | None:
    """The member with the highest hash of (member, name): highest random weight hashing.

    Every process that sees the same members picks the same winner, and a member joining or
    leaving moves only the names it wins or won (about 1/n of them), not everything.
    """
    best: tuple[bytes, str] | None = None
    for member in members:
        weight = hashlib.blake2b(f"{member}\0{name}".encode(), digest_size=8).digest()
        if best is None or (weight, member) > best:
            best = (weight, member)
    return None if best is None else best[1]


async def while_held(
    leases: Leases,
    name: str,
    body: Callable[[], Coroutine[Any, Any, None]],
    *,
    check_seconds: float | None = None,
) -> None:
    """Run `body()` while `name` is held, until cancelled: a singleton job (the scheduler).

    The body starts when the lease is gained and is cancelled when it is lost (checked every
    `check_seconds`, a tenth of the ttl by default: well inside the safety margin before anyone
    else may take the lease), and starts again when it is regained. A body that ends, or fails
    (logged), is started again one ttl later if the lease is still held (embedded, where the
    leases are held for good, within two). The body must stop promptly when cancelled, and,
    since a stalled process can outlive its lease, its writes should be idempotent or guarded
    by compare-and-set all the same.
    """
    interval = check_seconds if check_seconds is not None else leases.ttl / 10
    if check_seconds is None and isinstance(leases, LocalLeases):
        # Held for good (embedded): looked at only to start again a body that ended.
        interval = leases.ttl
    unwant = leases.want(lambda: [name])
    loop = asyncio.get_running_loop()
    running: asyncio.Task[None] | None = None
    not_before = 0.0
    try:
        while True:
            held = leases.holds(name)
            if running is not None and running.done():
                _report(name, running)
                running = None
                not_before = loop.time() + leases.ttl
            if held and running is None and loop.time() >= not_before:
                log.info("singleton_started", lease=name, holder=leases.holder)
                running = asyncio.create_task(body(), name=f"while-held-{name}")
            elif not held and running is not None:
                log.info("singleton_lost", lease=name, holder=leases.holder)
                await _cancel(running)
                running = None
            await asyncio.sleep(interval)
    finally:
        unwant()
        if running is not None:
            await _cancel(running)


def _report(name: str, task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        log.error("singleton_failed", lease=name, exc_info=error)


async def _cancel(task: asyncio.Task[None]) -> None:
    """Cancel and wait for the body; `wait`, so that a cancel of our own still reaches us."""
    task.cancel()
    await asyncio.wait([task])
    if not task.cancelled() and task.exception() is not None:
        log.error("singleton_failed", exc_info=task.exception())

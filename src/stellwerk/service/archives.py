"""Archives of a bus: the definitions, and taking a new one in before its creator is answered.

An archive keeps copies of the bus's events that match its pattern (all of them without one),
recorded from its creation on, for `retention_days` (0: forever). Its definition is saved with
this process's archiver paused, and `put` waits until the archiver that follows the bus (here or
in another process) has taken it in, so every event recorded after the answer is archived; after
`TAKE_SECONDS` without one the archive is shown `creating`. Deleting an archive drops its
copies. See docs/archives.md.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any, Final, Literal

import msgspec

from stellwerk.auth import Principal
from stellwerk.patterns import InvalidPatternError, PatternObject, compile_pattern
from stellwerk.routing import Archiver
from stellwerk.seams import ArchiveStats, ArchiveStore, Change, EventLog, Signals
from stellwerk.service.buses import Buses
from stellwerk.service.errors import Conflict, InvalidRequest, NotFound
from stellwerk.storage.control import ArchiveRecord, ConflictError, ControlPlane

MAX_ARCHIVES_PER_BUS: Final = 20
MAX_RETENTION_DAYS: Final = 36_500
TAKE_SECONDS: Final = 5.0  # how long a PUT waits for an archiver to take the archive in
TAKE_POLL_SECONDS: Final = 0.02
TAKE_SIGNAL_SECONDS: Final = 1.0  # the signal is at most once: say it again while waiting

ArchiveState = Literal["enabled", "catching_up", "creating"]


class ArchiveInput(msgspec.Struct, forbid_unknown_fields=True):
    """The body of `PUT /v1/buses/{bus}/archives/{name}`; no pattern: every event of the bus."""

    pattern: PatternObject | None = None
    retention_days: Annotated[int, msgspec.Meta(ge=0, le=MAX_RETENTION_DAYS)] = 0
    description: Annotated[str, msgspec.Meta(max_length=512)] = ""


class Archive(msgspec.Struct):
    """An archive as the API shows it.

    `events` and `size_bytes` count what it holds now. `state` is `creating` until the archiver
    of the bus has taken the archive in, then `catching_up` while that archiver has not yet
    looked at every event of the bus, and `enabled` once it has.
    """

    name: str
    bus: str
    pattern: dict[str, Any] | None
    retention_days: int
    description: str
    state: ArchiveState
    events: int
    size_bytes: int
    created_at: datetime
    updated_at: datetime


class Archives:
    def __init__(
        self,
        *,
        control: ControlPlane,
        buses: Buses,
        event_log: EventLog,
        store: ArchiveStore,
        archiver: Archiver,
        signals: Signals,
    ) -> None:
        self._control = control
        self._buses = buses
        self._log = event_log
        self._store = store
        self._archiver = archiver
        self._signals = signals

    async def put(
        self, principal: Principal, bus: str, name: str, body: ArchiveInput
    ) -> tuple[Archive, bool]:
        """Create or update an archive; it (once taken in, or after a while) and whether new."""
        await self._buses.record(principal.tenant_id, bus)
        if body.pattern is not None:
            try:
                compile_pattern(body.pattern)
            except InvalidPatternError as exc:
                raise InvalidRequest(
                    str(exc), code="InvalidEventPatternException", field="pattern"
                ) from None
        # Paused, the archiver cannot pass the start read here before it knows the archive.
        async with self._archiver.paused():
            start = await self._log.last_position(principal.bus(bus))
            try:
                record, created = await self._control.archives.put(
                    principal.tenant_id,
                    bus,
                    name,
                    pattern=body.pattern,
                    retention_days=body.retention_days,
                    description=body.description,
                    start_position=start,
                    max_archives=MAX_ARCHIVES_PER_BUS,
                )
            except ConflictError as exc:
                raise Conflict(str(exc), code="LimitExceeded") from None
        record = await self._taken_in(principal, record)
        (shown,) = await self._shown(principal, [record])
        return shown, created

    async def _taken_in(self, principal: Principal, record: ArchiveRecord) -> ArchiveRecord:
        """The archive once the archiver of its bus has taken it in, or after `TAKE_SECONDS`."""
        await self._archiver.take_in(principal.bus(record.bus))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TAKE_SECONDS
        next_signal = loop.time() + TAKE_SIGNAL_SECONDS
        while True:
            current = await self._control.archives.get(record.tenant_id, record.bus, record.name)
            if current is None or current.uid != record.uid:
                raise Conflict("the archive was deleted", code="ConcurrentModificationException")
            if current.taken or loop.time() >= deadline:
                return current
            if loop.time() >= next_signal:
                # The control plane announced it once, at most once: an archiver in another
                # process that missed it hears it again.
                await self._signals.changed(Change.of("archive", record.tenant_id, record.bus))
                next_signal = loop.time() + TAKE_SIGNAL_SECONDS
            await asyncio.sleep(TAKE_POLL_SECONDS)

    async def get(self, principal: Principal, bus: str, name: str) -> Archive:
        record = await self._control.archives.get(principal.tenant_id, bus, name)
        if record is None:
            raise NotFound.of(f"archive {name!r} on bus {bus!r}")
        (shown,) = await self._shown(principal, [record])
        return shown

    async def all(self, principal: Principal, bus: str) -> list[Archive]:
        await self._buses.record(principal.tenant_id, bus)
        records = await self._control.archives.for_bus(principal.tenant_id, bus)
        return await self._shown(principal, records)

    async def delete(self, principal: Principal, bus: str, name: str) -> None:
        async with self._archiver.paused():
            record = await self._control.archives.delete(principal.tenant_id, bus, name)
        if record is None:
            raise NotFound.of(f"archive {name!r} on bus {bus!r}")
        # The archiver has let go of it (reloaded on leaving the pause), so nothing is added
        # after. An archiver in another process may still add a batch before it hears: it drops
        # the archive's copies itself when it reloads (`Archiver._reload`).
        await self._store.drop(record.uid)

    async def _shown(self, principal: Principal, records: list[ArchiveRecord]) -> list[Archive]:
        if not records:
            return []
        bus = records[0].bus
        stats = await self._store.stats([r.uid for r in records])
        ref = principal.bus(bus)
        done = await self._store.cursor(ref)
        last = await self._log.last_position(ref)
        out = []
        for record in records:
            held = stats.get(record.uid, ArchiveStats(0, 0))
            caught_up = max(done, record.start_position) >= last
            state: ArchiveState = (
                "creating" if not record.taken else "enabled" if caught_up else "catching_up"
            )
            out.append(
                Archive(
                    name=record.name,
                    bus=record.bus,
                    pattern=record.pattern,
                    retention_days=record.retention_days,
                    description=record.description,
                    state=state,
                    events=held.events,
                    size_bytes=held.bytes,
                    created_at=record.created_at,
                    updated_at=record.updated_at,
                )
            )
        return out

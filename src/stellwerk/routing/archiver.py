"""The archiver: copies each bus's matching events into its archives, one cursor per bus.

How it is shaped and why: docs/archives.md ("stellwerk.routing.archiver").
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Protocol

import structlog
from prometheus_client import Counter

from stellwerk.events import REPLAY_NAME
from stellwerk.ops import Metrics
from stellwerk.patterns import Matcher
from stellwerk.refs import BusRef, TenantName
from stellwerk.routing.follower import BusFollower
from stellwerk.seams import (
    ArchiveCursorConflict,
    ArchiveStore,
    EventLog,
    Leases,
    StoredEvent,
    bus_owner,
)
from stellwerk.storage.control import ArchiveRecord, ControlPlane

DEFAULT_BATCH: Final = 1000
DEFAULT_POLL_SECONDS: Final = 1.0
DEFAULT_RELOAD_SECONDS: Final = 30.0
# Woken by appends, the archiver waits this long before it reads, so that single-event requests
# are archived tens at a time: one at a time, each commit wrote the archived table's last page,
# its time index's, the totals' and the cursor's again, 20 KB per ~800-byte event at 500
# requests/s (docs/archives.md, "Archiving gathers"). Nothing waits for a copy but a replay's
# start and a new archive's first answer.
ARCHIVE_GATHER_SECONDS: Final = 0.1

log = structlog.get_logger("stellwerk.archiver")

_REPLAYED = Matcher()
_REPLAYED.add(REPLAY_NAME, {REPLAY_NAME: [{"exists": True}]})


def is_replayed(body: bytes) -> bool:
    """Whether an event carries the `replayname` extension (a top-level attribute)."""
    return b'"replayname"' in body and bool(_REPLAYED.match(body))


class ArchiverHooks(Protocol):
    def on_archived(self, tenant: TenantName, bus: str, events: int, copies: int) -> None: ...


class ArchiverMetrics:
    """`stellwerk_archiver_events_total` (looked at) and `stellwerk_archived_events_total`."""

    def __init__(self, metrics: Metrics) -> None:
        self.events = Counter(
            "stellwerk_archiver_events_total",
            "Events of the log the archiver has looked at.",
            ["tenant", "bus"],
            registry=metrics.registry,
        )
        self.copies = Counter(
            "stellwerk_archived_events_total",
            "Copies of events stored in archives (one per archive an event went into).",
            ["tenant", "bus"],
            registry=metrics.registry,
        )

    def on_archived(self, tenant: TenantName, bus: str, events: int, copies: int) -> None:
        self.events.labels(tenant, bus).inc(events)
        if copies:
            self.copies.labels(tenant, bus).inc(copies)


@dataclass(frozen=True, slots=True)
class BusArchives:
    """The archives of one bus: patterns by uid, those without one, where each begins."""

    records: tuple[ArchiveRecord, ...]
    matcher: Matcher
    unfiltered: tuple[str, ...]
    starts: dict[str, int]  # uid -> start_position

    @property
    def start(self) -> int:
        """Events at or below this position belong in none of the bus's archives."""
        return min(self.starts.values())

    @property
    def untaken(self) -> list[ArchiveRecord]:
        """Archives no archiver has taken in yet."""
        return [record for record in self.records if not record.taken]

    @classmethod
    def of(cls, records: Sequence[ArchiveRecord]) -> BusArchives:
        matcher = Matcher()
        unfiltered = []
        for record in records:
            if record.pattern is None:
                unfiltered.append(record.uid)
            else:
                matcher.add(record.uid, record.pattern)
        starts = {r.uid: r.start_position for r in records}
        return cls(tuple(records), matcher, tuple(unfiltered), starts)

    def copies(self, events: Sequence[StoredEvent]) -> list[tuple[str, StoredEvent]]:
        """`(uid, event)` for each archive each event belongs in."""
        out: list[tuple[str, StoredEvent]] = []
        matcher, starts = self.matcher, self.starts
        for event in events:
            if event.position <= self.start or is_replayed(event.body):
                continue
            uids = (
                [*self.unfiltered, *matcher.match(event.body)] if len(matcher) else self.unfiltered
            )
            out.extend((uid, event) for uid in uids if event.position > starts[uid])
        return out


async def load_archives(control: ControlPlane) -> dict[BusRef, BusArchives]:
    """Every archive definition, by bus."""
    by_bus: dict[BusRef, list[ArchiveRecord]] = defaultdict(list)
    for tenant, record in await control.archives.everything():
        by_bus[BusRef(tenant, record.bus)].append(record)
    return {key: BusArchives.of(records) for key, records in by_bus.items()}


class Archiver(BusFollower):
    """Archives every bus that has archives from `log` into `store`."""

    conflict = ArchiveCursorConflict
    activity = "archiving"

    def __init__(
        self,
        log: EventLog,
        store: ArchiveStore,
        control: ControlPlane,
        *,
        hooks: ArchiverHooks | None = None,
        batch: int = DEFAULT_BATCH,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        reload_seconds: float = DEFAULT_RELOAD_SECONDS,
        owns: Callable[[BusRef], bool] | None = None,
        leases: Leases | None = None,
        gather_seconds: float = ARCHIVE_GATHER_SECONDS,
    ) -> None:
        """With `leases`, archive the buses whose archiver lease this process holds (and wake
        the lease keeper when the set of buses with archives changes); else `owns` says."""
        super().__init__(poll_seconds=poll_seconds, owns=owns, gather_seconds=gather_seconds)
        self.log = log
        self.store = store
        self.control = control
        self.hooks = hooks
        self.batch = batch
        self.reload_seconds = reload_seconds
        self._archives: dict[BusRef, BusArchives] = {}
        self._uids: set[str] = set()
        self._lock = asyncio.Lock()  # held by a batch, by a reload, and while paused
        self._next_reload = 0.0
        self._running = False
        self._paused = False
        # Told when the set of buses with archives changed (the lease keeper's `wake`).
        self._buses_changed: Callable[[], None] = lambda: None
        if leases is not None:
            self.owns = bus_owner(leases, "archiver", self.buses)
            self._buses_changed = leases.wake

    def buses(self) -> list[BusRef]:
        return list(self._archives)

    def notify(self, bus: BusRef) -> None:
        # A bus without an archive has nothing to archive: no wake-up and round per append.
        # One that gets an archive is taken in by the reload that finds it (`_reload`).
        if bus in self._archives:
            super().notify(bus)

    @property
    def running(self) -> bool:
        """Whether `run` is archiving (this process plays the router role)."""
        return self._running

    async def reload(self) -> None:
        """Take in the archive definitions as they are now (while paused: when the pause ends,
        which reloads anyway; a change made inside the pause is announced inside it)."""
        if self._paused:
            return
        async with self._lock:
            await self._reload()

    @contextlib.asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        """No batch runs while definitions change; they are reloaded on the way out.

        Read a new archive's start position inside, so that the archiver cannot have passed it.
        """
        async with self._lock:
            self._paused = True
            try:
                yield
            finally:
                self._paused = False
                await self._reload()

    async def take_in(self, bus: BusRef) -> None:
        """Take in the bus's new archives now, if this archiver runs and follows the bus (else
        the one that does takes them in before its next batch)."""
        if not self.running or not self.owns(bus):
            return
        async with self._lock:
            if bus in self._archives:
                await self._take_in(bus)

    async def _reload(self) -> None:
        archives = await load_archives(self.control)
        uids = {uid for each in archives.values() for uid in each.starts}
        gone, self._uids = self._uids - uids, uids
        if archives.keys() != self._archives.keys():
            self._buses_changed()
        self._archives = archives
        for bus, each in archives.items():
            if each.untaken:
                self.notify(bus)  # take them in at once: a creator waits for that
        # The archiver is the only writer of archived events: once it has stopped archiving
        # into a deleted archive, what is left of it can go (the API drops it too).
        for uid in gone:
            await self.store.drop(uid)

    async def run(self, *, burst: bool = False) -> None:
        """Archive until `stop()`; with `burst`, until every bus is archived to its end. The
        definitions are read afresh first."""
        self._next_reload = 0.0
        self._running = True
        try:
            await super().run(burst=burst)
        finally:
            self._running = False

    async def before_round(self) -> None:
        """Reload the definitions every `reload_seconds`, for changes made by another process
        whose signal was lost."""
        loop = asyncio.get_running_loop()
        if loop.time() < self._next_reload:
            return
        try:
            await self.reload()
        except Exception:
            log.exception("archive_reload_failed")
        self._next_reload = loop.time() + self.reload_seconds

    async def step(self, bus: BusRef) -> int:
        return await self.archive_batch(bus)

    async def archive_bus(self, bus: BusRef) -> int:
        """Archive the bus up to its end; return how many events were looked at."""
        return await self.follow(bus)

    async def archive_batch(self, bus: BusRef) -> int:
        """Archive the next batch of the bus's events; return how many (0 at the end)."""
        key = bus
        async with self._lock:
            if key not in self._archives:
                return 0
            archives = await self._take_in(key)
            if archives is None:
                return 0
            cursor = await self._cursor(key)
            # Skip what no archive of the bus wants (a bus whose first archive is new).
            events = await self.log.read(bus, after=max(cursor, archives.start), limit=self.batch)
            if not events:
                if cursor < archives.start:
                    # Nothing after the start yet: say so, for those who wait for the cursor
                    # to reach the log's head (replays).
                    await self._move(bus, archives.start, [])
                return 0
            copies = archives.copies(events)
            await self._move(bus, events[-1].position, copies)
        if self.hooks is not None:
            self.hooks.on_archived(bus.tenant, bus.bus, len(events), len(copies))
        return len(events)

    async def _cursor(self, key: BusRef) -> int:
        cursor = self._cursors.get(key)
        if cursor is None:
            cursor = self._cursors[key] = await self.store.cursor(key)
        return cursor

    async def _take_in(self, key: BusRef) -> BusArchives | None:
        """Take in the bus's untaken archives (the lock held); the bus's archives as they are
        then (None: all of them were deleted meanwhile)."""
        archives = self._archives[key]
        if not archives.untaken:
            return archives
        # The stored cursor, not the one kept here: another archiver may have moved it.
        cursor = self._cursors[key] = await self.store.cursor(key)
        records = []
        for record in archives.records:
            if not record.taken:
                taken = await self.control.archives.take(record.uid, cursor)
                if taken is None:
                    continue  # deleted meanwhile: the next reload drops what it holds
                if taken.start_position > record.start_position:
                    log.warning(
                        "archive_start_moved",
                        tenant=key.tenant,
                        bus=key.bus,
                        archive=record.name,
                        created_at=record.start_position,
                        start=taken.start_position,
                    )
                record = taken
            records.append(record)
        if not records:
            del self._archives[key]
            return None
        archives = self._archives[key] = BusArchives.of(records)
        return archives

    async def _move(
        self, bus: BusRef, position: int, copies: Sequence[tuple[str, StoredEvent]]
    ) -> None:
        try:
            await self.store.archive(bus, position, copies)
        except ArchiveCursorConflict:
            # Someone else archived these events: take their cursor and go on from there.
            del self._cursors[bus]
            raise
        self._cursors[bus] = position


async def archive_floors(control: ControlPlane, store: ArchiveStore) -> dict[BusRef, int]:
    """Per bus with archives, the position up to which the log's events are no longer needed.

    That is the archiver's cursor, or the archives' earliest start if higher (events before it
    belong in none of them). Log retention must not trim above it.
    """
    floors: dict[BusRef, int] = {}
    for bus, archives in (await load_archives(control)).items():
        floors[bus] = max(await store.cursor(bus), archives.start)
    return floors


async def trim_archives(control: ControlPlane, store: ArchiveStore, now: datetime) -> int:
    """Apply every archive's `retention_days` (0: forever) at `now`; return the events removed."""
    removed = 0
    for _, record in await control.archives.everything():
        if record.retention_days > 0:
            removed += await store.trim(record.uid, now - timedelta(days=record.retention_days))
    return removed

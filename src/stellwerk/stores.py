"""The stores behind the seams of one process, chosen by its settings: SQLite files in the data
directory (embedded), or JetStream at `--nats-url` (scale-out), and how it talks to the others."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import structlog

from stellwerk.config import Role, Settings
from stellwerk.ingest import IngestMetrics
from stellwerk.seams import (
    ArchiveStore,
    DeliveryQueue,
    EventLog,
    Leases,
    LocalLeases,
    LocalSignals,
    Signals,
)
from stellwerk.storage import LogWatch
from stellwerk.storage.control import ControlPlane
from stellwerk.storage.eventlog.sqlite import SqliteEventLog
from stellwerk.storage.pipeline import pipeline_stores
from stellwerk.storage.signals import UnixSignals
from stellwerk.storage.sqlite import LEGACY_EVENTS_FILE, LOG_DIR, PIPELINE_LOCK, FileLock

log = structlog.get_logger("stellwerk")


@dataclass(frozen=True)
class Stores:
    control: ControlPlane
    event_log: EventLog
    queue: DeliveryQueue
    archive_store: ArchiveStore
    signals: Signals
    leases: Leases
    log_watch: LogWatch
    # Embedded: held while this process runs the pipeline's roles, so that a second server on
    # the data directory waits instead of routing and delivering everything again.
    pipeline_lock: FileLock | None = None

    async def start(self) -> None:
        """Open what the control plane does not need (it is open already)."""
        await self.event_log.start()
        if self.pipeline_lock is not None:
            await self.pipeline_lock.acquire(waiting=_say_waiting)
        await self.queue.start()
        await self.archive_store.start()
        await self.leases.start()

    async def close(self) -> None:
        """Close everything, the control plane last; the first failure is raised after."""
        outcomes = await asyncio.gather(
            # Leases first: successors take over at once.
            self.leases.close(),
            self.signals.close(),
            self.queue.close(),
            self.archive_store.close(),
            self.event_log.close(),
            return_exceptions=True,
        )
        await self.control.close()
        if self.pipeline_lock is not None:
            self.pipeline_lock.release()
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome


def _say_waiting(holder: int | None) -> None:
    log.warning(
        "waiting for the data directory: another Stellwerk process runs its pipeline (routing, "
        "delivery, the scheduler); this one takes over when that one stops",
        holder_pid=holder,
    )


def stores_for(settings: Settings, control: ControlPlane, ingest_metrics: IngestMetrics) -> Stores:
    """The stores the settings name (not started yet), around an open control plane."""
    dedup_window = settings.dedup_window
    if settings.nats_url is None:
        data_dir, role = settings.data_dir, settings.role
        # One process plays every role, or a gateway and a pipeline process share the data
        # directory: the gateway appends to the log, the pipeline only reads it.
        signals: Signals = (
            LocalSignals() if role is Role.ALL else UnixSignals(data_dir, name=str(role))
        )
        # The queue and the archive store share one file and one writer (pipeline.db).
        pipeline = pipeline_stores(data_dir)
        return Stores(
            control=control,
            event_log=SqliteEventLog(
                data_dir / LOG_DIR,
                appends=role is not Role.PIPELINE,
                legacy=data_dir / LEGACY_EVENTS_FILE,
                dedup_window=dedup_window,
                on_commit=ingest_metrics.on_commit,
            ),
            queue=pipeline.queue,
            archive_store=pipeline.archives,
            signals=signals,
            leases=LocalLeases(),
            log_watch=LogWatch(forward=signals.appended),
            pipeline_lock=(None if role is Role.GATEWAY else FileLock(data_dir / PIPELINE_LOCK)),
        )
    # Imported here: embedded mode never loads nats-py.
    from stellwerk.storage.archive.jetstream import JetStreamArchiveStore
    from stellwerk.storage.eventlog.jetstream import JetStreamEventLog
    from stellwerk.storage.leases import JetStreamLeases
    from stellwerk.storage.queue.jetstream import JetStreamDeliveryQueue
    from stellwerk.storage.signals import NatsSignals

    url, namespace, replicas = settings.nats_url, settings.nats_namespace, settings.nats_replicas
    signals = NatsSignals(url, namespace=namespace, name=f"stellwerk-{settings.role}")
    return Stores(
        control=control,
        event_log=JetStreamEventLog(
            url, namespace=namespace, replicas=replicas, dedup_window=dedup_window
        ),
        queue=JetStreamDeliveryQueue(url, namespace=namespace, replicas=replicas),
        archive_store=JetStreamArchiveStore(url, namespace=namespace, replicas=replicas),
        signals=signals,
        leases=JetStreamLeases(
            url, namespace=namespace, replicas=replicas, ttl=settings.lease_ttl_seconds
        ),
        log_watch=LogWatch(forward=signals.appended),
    )


@runtime_checkable
class LaneWatching(Protocol):
    """A delivery queue shared between processes that can tell when its work changed."""

    def watch_lanes(self, on_lanes: Callable[[], None]) -> None: ...

    def poke(self) -> None: ...


def routed_elsewhere(queue: DeliveryQueue) -> None:
    """Another process routed deliveries: a shared queue looks for them now."""
    if isinstance(queue, LaneWatching):
        queue.poke()  # its scan finds the new lanes now and wakes the worker

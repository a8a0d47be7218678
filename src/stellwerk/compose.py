"""The composition root's first half: the services of a process, built from its settings.

One place decides which implementation backs each seam (SQLite files in the data directory in
embedded mode), how the parts are connected (ingest wakes the router, the router wakes the
worker, the rule book feeds both), and in which order they open and close.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Final, Protocol, runtime_checkable

import structlog

from stellwerk.api.middleware.auth import Authenticator
from stellwerk.config import Role, Settings
from stellwerk.delivery.builder import TargetBuilder
from stellwerk.delivery.bus_access import BusAccess
from stellwerk.delivery.metrics import DeliveryMetrics
from stellwerk.delivery.registry import TargetRegistry
from stellwerk.delivery.targets import SessionPool
from stellwerk.delivery.worker import DeliveryWorker
from stellwerk.erasure.runner import ErasureMetrics, ErasureRunner
from stellwerk.erasure.suppression import Suppressions
from stellwerk.ingest.binding import BindingLimits
from stellwerk.ingest.metrics import IngestMetrics
from stellwerk.ops.metrics import Metrics
from stellwerk.ratelimit import TokenBuckets
from stellwerk.retention import Retention, RetentionMetrics
from stellwerk.routing.archiver import Archiver, ArchiverMetrics, archive_floors, trim_archives
from stellwerk.routing.replay import ReplayMetrics, ReplayRunner
from stellwerk.routing.router import Router
from stellwerk.routing.rulebook import RuleBook
from stellwerk.rules import MAX_TIMEOUT_SECONDS
from stellwerk.seams import (
    ArchiveStore,
    Change,
    DeliveryQueue,
    EventLog,
    Leases,
    LocalLeases,
    LocalSignals,
    Signals,
    bus_owner,
)
from stellwerk.secrets import SecretBox, load_or_create_key
from stellwerk.services import Services
from stellwerk.storage import LogWatch
from stellwerk.storage.archive.sqlite import SqliteArchiveStore
from stellwerk.storage.control import BusDirectory, ControlPlane
from stellwerk.storage.eventlog.sqlite import SqliteEventLog
from stellwerk.storage.queue.sqlite import SqliteDeliveryQueue
from stellwerk.storage.sqlite import ARCHIVES_FILE, DELIVERIES_FILE, LEGACY_EVENTS_FILE, LOG_DIR
from stellwerk.tenancy import bootstrap

log = structlog.get_logger("stellwerk")

# The default delivery lease on JetStream: twice the default target timeout (5 s) with room for
# prefetched deliveries waiting for a slot.
SHARED_LEASE_SECONDS: Final = 60.0


@dataclass
class Backends:
    """The stores behind the seams, and how this process talks to the others."""

    event_log: EventLog
    queue: DeliveryQueue
    archive_store: ArchiveStore
    signals: Signals
    leases: Leases


def build_backends(settings: Settings, ingest_metrics: IngestMetrics) -> Backends:
    """SQLite files in the data directory (embedded), or JetStream at `--nats-url`."""
    dedup_window = settings.dedup_window
    if settings.nats_url is None:
        return Backends(
            event_log=SqliteEventLog(
                settings.data_dir / LOG_DIR,
                legacy=settings.data_dir / LEGACY_EVENTS_FILE,
                dedup_window=dedup_window,
                on_commit=ingest_metrics.on_commit,
            ),
            queue=SqliteDeliveryQueue(settings.data_dir / DELIVERIES_FILE),
            archive_store=SqliteArchiveStore(settings.data_dir / ARCHIVES_FILE),
            signals=LocalSignals(),
            leases=LocalLeases(),
        )
    # Imported here: embedded mode never loads nats-py.
    from stellwerk.storage.archive.jetstream import JetStreamArchiveStore
    from stellwerk.storage.eventlog.jetstream import JetStreamEventLog
    from stellwerk.storage.leases import JetStreamLeases
    from stellwerk.storage.queue.jetstream import JetStreamDeliveryQueue
    from stellwerk.storage.signals import NatsSignals

    url, namespace, replicas = settings.nats_url, settings.nats_namespace, settings.nats_replicas
    return Backends(
        event_log=JetStreamEventLog(
            url, namespace=namespace, replicas=replicas, dedup_window=dedup_window
        ),
        queue=JetStreamDeliveryQueue(url, namespace=namespace, replicas=replicas),
        archive_store=JetStreamArchiveStore(url, namespace=namespace, replicas=replicas),
        signals=NatsSignals(url, namespace=namespace, name=f"stellwerk-{settings.role}"),
        leases=JetStreamLeases(
            url, namespace=namespace, replicas=replicas, ttl=settings.lease_ttl_seconds
        ),
    )


async def open_services(
    settings: Settings,
    metrics: Metrics,
    ingest_metrics: IngestMetrics,
    delivery_metrics: DeliveryMetrics,
) -> Services:
    # Embedded, a key file in the data directory serves; in scale-out mode every process needs
    # the same STELLWERK_SECRET_KEY.
    box = SecretBox(load_or_create_key(settings.data_dir, os.environ, create=settings.embedded))
    control = await ControlPlane.open(settings.control_database_url, box=box)
    backends = build_backends(settings, ingest_metrics)
    event_log, queue, archive_store = backends.event_log, backends.queue, backends.archive_store
    signals, leases = backends.signals, backends.leases
    session_pool = SessionPool()
    log_watch = LogWatch(forward=signals.appended)
    bus_access = BusAccess(control)
    rulebook = RuleBook(
        control,
        TargetBuilder(
            session_pool=session_pool,
            event_log=event_log,
            appended=log_watch.appended,
            allow_private=settings.allow_private_targets,
            bus_refusal=bus_access.refusal,
        ),
    )
    try:
        written = await bootstrap(control, settings.data_dir)
        if written is not None:
            log.warning(
                "created tenant 'default'; its admin and ingest keys are in the file",
                file=str(written.resolve()),
            )
        await event_log.start()
        await queue.start()
        await archive_store.start()
        await leases.start()
        await rulebook.load()
    except BaseException:
        await asyncio.gather(
            rulebook.close(),
            signals.close(),
            leases.close(),
            session_pool.close(),
            queue.close(),
            archive_store.close(),
            event_log.close(),
            return_exceptions=True,
        )
        await control.close()
        raise
    wake = asyncio.Event()
    if isinstance(queue, LaneWatching):
        queue.watch_lanes(wake.set)  # deliveries routed by another process
    # A lease must outlast twice the slowest target's timeout (the worker holds prefetched
    # deliveries too), or a slow but healthy target gets the same event twice. Embedded, leases
    # live in memory, so a long one costs nothing after a crash: lost leases are due at once on
    # restart. Shared (JetStream), a dead worker's leases hold its deliveries until they expire,
    # so there the lease is `--delivery-lease-seconds` (see docs/running-scale-out.md).
    lease_seconds = settings.delivery_lease_seconds or (
        2 * MAX_TIMEOUT_SECONDS if settings.embedded else SHARED_LEASE_SECONDS
    )
    worker = DeliveryWorker(
        queue,
        rulebook.binding,
        hooks=delivery_metrics,
        wake=wake,
        lease_seconds=lease_seconds,
    )
    router = Router(
        event_log,
        queue,
        rulebook.rule_set,
        rulebook.buses,
        wake=wake,
        hooks=RoutedSignal(delivery_metrics, signals),
    )
    log_watch.subscribe(router.notify)
    routes = settings.role in (Role.ALL, Role.ROUTER)
    # Each bus is routed, and archived, by the one router process holding its lease.
    archiver = Archiver(
        event_log,
        archive_store,
        control,
        hooks=ArchiverMetrics(metrics),
        leases=leases if routes else None,
    )
    if routes:
        router.owns = bus_owner(leases, "router", rulebook.buses)
        rulebook.buses_changed = leases.wake
    log_watch.subscribe(archiver.notify)
    suppressions = Suppressions(control.erasures, metrics, ttl=settings.key_cache_seconds)
    services = Services(
        settings=settings,
        control=control,
        authenticator=Authenticator(control, cache_seconds=settings.key_cache_seconds),
        metrics=metrics,
        event_log=event_log,
        buses=BusDirectory(control, ttl=settings.key_cache_seconds),
        ingest_metrics=ingest_metrics,
        binding_limits=BindingLimits(
            max_body_size=settings.max_body_bytes, max_batch_size=settings.max_batch_events
        ),
        event_rate=TokenBuckets(settings.tenant_event_rate),
        targets=TargetRegistry(
            control,
            allow_private_targets=settings.allow_private_targets,
            function_modules=settings.function_modules,
        ),
        log_watch=log_watch,
        queue=queue,
        rulebook=rulebook,
        router=router,
        worker=worker,
        delivery_metrics=delivery_metrics,
        session_pool=session_pool,
        bus_access=bus_access,
        retention=Retention(
            control,
            event_log,
            queue,
            log_retention=timedelta(hours=settings.log_retention_hours),
            interval=settings.retention_interval_seconds,
            metrics=RetentionMetrics(metrics),
            archive_floors=functools.partial(archive_floors, control, archive_store),
            trim_archives=functools.partial(trim_archives, control, archive_store),
        ),
        archive_store=archive_store,
        archiver=archiver,
        replays=ReplayRunner(
            control,
            archive_store,
            event_log,
            queue,
            rulebook.rule_set,
            rate=settings.replay_rate,
            max_running=settings.max_concurrent_replays,
            wake=wake,
            hooks=ReplayMetrics(metrics),
        ),
        suppressions=suppressions,
        erasures=ErasureRunner(
            control,
            event_log,
            queue,
            archive_store,
            suppressions=suppressions,
            metrics=ErasureMetrics(metrics),
            on_suppressed=lambda tenant, bus: signals.changed(Change("suppression", tenant, bus)),
        ),
        signals=signals,
        leases=leases,
    )
    try:
        await signals.start(
            on_appended=log_watch.heard,
            on_routed=functools.partial(_routed_elsewhere, queue),
            on_changed=services.apply,
            on_resync=services.resync,
        )
    except BaseException:
        await services.close()
        raise
    return services


class RoutedSignal:
    """The router's hooks: metrics, and a `routed` signal for workers in other processes."""

    def __init__(self, metrics: DeliveryMetrics, signals: Signals) -> None:
        self._metrics = metrics
        self._signals = signals

    def on_routed(self, tenant: str, bus: str, events: int, deliveries: int) -> None:
        self._metrics.on_routed(tenant, bus, events, deliveries)
        if deliveries:
            self._signals.routed()

    def on_matched(self, tenant: str, bus: str, rules: Sequence[str]) -> None:
        self._metrics.on_matched(tenant, bus, rules)


@runtime_checkable
class LaneWatching(Protocol):
    """A delivery queue shared between processes that can tell when its work changed."""

    def watch_lanes(self, on_lanes: Callable[[], None]) -> None: ...

    def poke(self) -> None: ...


def _routed_elsewhere(queue: DeliveryQueue) -> None:
    if isinstance(queue, LaneWatching):
        queue.poke()  # its scan finds the new lanes now and wakes the worker

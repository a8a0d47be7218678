"""The composition root's first half: the services of a process, built from its settings.

One place decides which implementation backs each seam (SQLite files in the data directory in
embedded mode), how the parts are connected (ingest wakes the router, the router wakes the
worker, the rule book feeds both), and in which order they open and close. Every part gets what
it uses when it is made; nothing is wired in afterwards.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final

import structlog

from stellwerk.backups import BackupMetrics, ScheduledBackups
from stellwerk.capability import Capability, CapabilityContext, Database, Opened, Outgoing
from stellwerk.config import Role, Settings
from stellwerk.delivery import (
    BusAccess,
    DeliveryMetrics,
    DeliveryWorker,
    TargetBuilder,
    TargetKinds,
    TargetRegistry,
    TenantThrottle,
)
from stellwerk.delivery.targets import AddressPolicy, SessionPool
from stellwerk.erasure import ErasureMetrics, ErasureRunner, Suppressions
from stellwerk.ingest import BindingLimits, IngestMetrics
from stellwerk.ops import Metrics, Tracing
from stellwerk.ratelimit import Limiter, LimiterMetrics, LocalLimiter, SharedLimiter
from stellwerk.retention import Retention, RetentionMetrics
from stellwerk.roles import Duty, RoleSupervisor, Scheduler, roles_of
from stellwerk.routing import (
    Archiver,
    ArchiverMetrics,
    ReplayMetrics,
    ReplayRunner,
    Router,
    RuleBook,
    RuleTicker,
    SiteRouting,
    archive_floors,
    trim_archives,
)
from stellwerk.rules import MAX_TIMEOUT_SECONDS
from stellwerk.seams import (
    DeliveryHistory,
    Leases,
    QueueDepth,
    Signals,
    bus_owner,
    while_held,
)
from stellwerk.secrets import SecretBox, derive_key, load_or_create_key
from stellwerk.service import (
    Archives,
    Authenticator,
    Buses,
    Caches,
    CapabilityChanges,
    Connections,
    DeadLetters,
    Erasures,
    FailedEvents,
    Gate,
    Grants,
    History,
    Ingest,
    Keys,
    Platform,
    Quotas,
    Readiness,
    Replays,
    Rules,
    Schemas,
    Tail,
    Tenants,
)
from stellwerk.starthold import hold_start
from stellwerk.storage.control import BusDirectory, ControlPlane
from stellwerk.storage.sqlite import BackupPart
from stellwerk.stores import LaneWatching, Stores, routed_elsewhere, stores_for

log = structlog.get_logger("stellwerk")

# The default delivery lease on JetStream: twice the default target timeout (5 s) with room for
# prefetched deliveries waiting for a slot.
SHARED_LEASE_SECONDS: Final = 60.0


DEPTH_REFRESH_SECONDS: Final = 5.0


@dataclass(frozen=True)
class Pipeline:
    """The engine's moving parts: what the router, delivery and scheduler roles run."""

    rulebook: RuleBook
    router: Router
    archiver: Archiver
    worker: DeliveryWorker
    replays: ReplayRunner
    erasures: ErasureRunner
    session_pool: SessionPool


@dataclass(frozen=True)
class Services:
    """One process: its stores, the application layer over them (`platform`, what the edges
    call), the engine's parts, and the roles it plays (`roles`, started and stopped here)."""

    settings: Settings
    stores: Stores
    pipeline: Pipeline
    platform: Platform
    caches: Caches
    roles: RoleSupervisor
    capabilities: Mapping[str, Opened] = field(default_factory=dict)

    def start(self) -> None:
        """Start this process's roles in the background."""
        self.roles.start()

    async def close(self) -> None:
        await self.roles.stop()
        await _close_capabilities(self.capabilities)
        # After the scheduler: until then it could still start resuming erasures, and a task
        # left querying a closed control plane hangs the loop's shutdown.
        await self.pipeline.erasures.close()
        try:
            await self.pipeline.rulebook.close()
            await self.pipeline.session_pool.close()
            await self.platform.quotas.close()
        finally:
            await self.stores.close()  # leases after the work they guard: successors go now


async def open_services(
    settings: Settings,
    metrics: Metrics,
    ingest_metrics: IngestMetrics,
    delivery_metrics: DeliveryMetrics,
    *,
    tracing: Tracing | None = None,
    capabilities: Sequence[Capability] = (),
) -> Services:
    # Embedded, a key file in the data directory serves; in scale-out mode every process needs
    # the same STELLWERK_SECRET_KEY.
    master = load_or_create_key(settings.data_dir, os.environ, create=settings.embedded)
    box = SecretBox(master)
    control = await ControlPlane.open(settings.control_database_url, box=box)
    stores = stores_for(settings, control, ingest_metrics)
    roles = roles_of(settings.role)
    routes = Role.ROUTER in roles  # each bus is routed and archived by the lease holder
    session_pool = SessionPool()
    kinds = TargetKinds()  # the target types capabilities bring, registered as they open
    bus_access = BusAccess(control)
    rulebook = RuleBook(
        control,
        TargetBuilder(
            session_pool=session_pool,
            event_log=stores.event_log,
            appended=stores.log_watch.appended,
            allow_private=settings.allow_private_targets,
            bus_refusal=bus_access.refusal,
            kinds=kinds,
        ),
        buses_changed=stores.leases.wake if routes else None,
    )
    try:
        await _bootstrap(control, settings)
        await stores.start()
        await rulebook.load()
    except BaseException:
        await asyncio.gather(rulebook.close(), session_pool.close(), return_exceptions=True)
        await asyncio.gather(stores.close(), return_exceptions=True)
        raise
    # From here on a failure closes what is open, so that a start tried again finds the log's
    # lock free.
    try:
        suppressions = Suppressions(control.erasures, metrics, ttl=settings.key_cache_seconds)
        site_routing = SiteRouting()  # a capability may make this site stand by (sites)
        quotas = Quotas(
            control, ttl=settings.key_cache_seconds, limiter=_limiter(settings, metrics)
        )
        pipeline = _pipeline(
            settings,
            stores,
            rulebook,
            session_pool,
            suppressions,
            metrics,
            delivery_metrics,
            tracing,
            site_routing,
            quotas,
        )
        authenticator = Authenticator(control, cache_seconds=settings.key_cache_seconds)
        bus_directory = BusDirectory(control, ttl=settings.key_cache_seconds)
        capability_changes = CapabilityChanges()
        caches = Caches(
            signals=stores.signals,
            rulebook=rulebook,
            buses=bus_directory,
            bus_access=bus_access,
            authenticator=authenticator,
            suppressions=suppressions,
            archiver=pipeline.archiver,
            router=pipeline.router,
            replays=pipeline.replays,
            quotas=quotas,
            capabilities=capability_changes,
        )
        control.changes.listen(caches.announce)
        platform = _platform(
            settings,
            stores,
            pipeline,
            authenticator,
            bus_directory,
            suppressions,
            ingest_metrics,
            tracing,
            kinds,
            quotas,
        )
        parts = [part for capability in capabilities for part in capability.backup_parts]
        duties = _duties(settings, stores, pipeline, metrics, delivery_metrics, platform, parts)
    except BaseException:
        await asyncio.gather(rulebook.close(), session_pool.close(), return_exceptions=True)
        await asyncio.gather(stores.close(), return_exceptions=True)
        raise
    try:
        opened = await _open_capabilities(
            capabilities,
            CapabilityContext(
                settings,
                platform,
                Database(control.engine, control.changes),
                metrics,
                roles,
                singleton=functools.partial(_singleton, stores.leases),
                outgoing=Outgoing(
                    session_pool, AddressPolicy.build(settings.allow_private_targets)
                ),
                target_kinds=kinds,
                key=functools.partial(derive_key, master),
                site_routing=site_routing,
                changes=capability_changes,
            ),
        )
    except BaseException:
        await Services(
            settings, stores, pipeline, platform, caches, RoleSupervisor({}, roles)
        ).close()
        raise
    for capability in opened.values():
        for role, more in capability.duties().items():
            duties.setdefault(role, []).extend(more)
    services = Services(
        settings=settings,
        stores=stores,
        pipeline=pipeline,
        platform=platform,
        caches=caches,
        roles=RoleSupervisor(duties, roles),
        capabilities=opened,
    )
    try:
        await hold_start(str(settings.role))  # only in a test that asks for it
        await stores.signals.start(
            on_appended=stores.log_watch.heard,
            on_routed=functools.partial(routed_elsewhere, stores.queue),
            on_changed=caches.take,
            on_resync=caches.resync,
        )
        # A change committed between the first read of the rules above and this process
        # listening for changes was signalled to nobody here: read once more, now that every
        # later change will be heard.
        await caches.resync()
    except BaseException:
        await services.close()
        raise
    return services


async def _open_capabilities(
    capabilities: Sequence[Capability], context: CapabilityContext
) -> dict[str, Opened]:
    """Open each capability in turn; if one fails, close those already open and raise."""
    opened: dict[str, Opened] = {}
    try:
        for capability in capabilities:
            opened[capability.name] = await capability.open(context)
    except BaseException:
        await _close_capabilities(opened)
        raise
    return opened


def _singleton(leases: Leases, name: str, body: Callable[[], Coroutine[Any, Any, None]]) -> Duty:
    """A duty running `body` while this process holds lease `name` (`CapabilityContext`)."""
    return Duty(name, functools.partial(while_held, leases, name, body))


async def _close_capabilities(opened: Mapping[str, Opened]) -> None:
    """Close in the reverse order of opening; one failing to close does not keep the others
    open."""
    for name, capability in reversed(list(opened.items())):
        try:
            await capability.close()
        except Exception:
            log.exception("closing a capability failed", capability=name)


async def _bootstrap(control: ControlPlane, settings: Settings) -> None:
    written = await Tenants(control).bootstrap(settings.data_dir)
    if written is not None:
        log.warning(
            "created tenant 'default'; its admin and ingest keys are in the file",
            file=str(written.resolve()),
        )


async def prepare_data_directory(settings: Settings) -> None:
    """What the processes of an embedded data directory must not race over, done once before
    they start: the control plane's migrations, the first tenant, recovering the log and moving
    an earlier version's files in. Waits (saying so) while another server holds the directory."""
    box = SecretBox(load_or_create_key(settings.data_dir, os.environ, create=True))
    control = await ControlPlane.open(settings.control_database_url, box=box)
    stores = stores_for(
        dataclasses.replace(settings, role=Role.ALL), control, IngestMetrics(Metrics())
    )
    try:
        await _bootstrap(control, settings)
        await stores.start()
    finally:
        await stores.close()


def _limiter(settings: Settings, metrics: Metrics) -> Limiter:
    """Rate limits in Redis with `--redis-url` (one budget for every process), else in this
    process."""
    if settings.redis_url is None:
        return LocalLimiter()
    return SharedLimiter(settings.redis_url, metrics=LimiterMetrics(metrics.registry))


def _redriven(worker: DeliveryWorker, signals: Signals) -> None:
    """Dead letters were redriven: this process's worker looks now, and so do other processes'
    (the pipeline process of embedded mode, which would otherwise see them at its next poll)."""
    worker.notify()
    signals.routed()


def _pipeline(
    settings: Settings,
    stores: Stores,
    rulebook: RuleBook,
    session_pool: SessionPool,
    suppressions: Suppressions,
    metrics: Metrics,
    delivery_metrics: DeliveryMetrics,
    tracing: Tracing | None,
    site_routing: SiteRouting,
    quotas: Quotas,
) -> Pipeline:
    control, event_log, queue = stores.control, stores.event_log, stores.queue
    routes = Role.ROUTER in roles_of(settings.role)
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
    targets = rulebook.binding if tracing is None else tracing.targets(rulebook.binding)
    # A tenant's cap on each target's invocations (none unless the operator set one).
    invocations = quotas.rate("targets", "target_invocations_per_second", 0.0)
    targets = TenantThrottle(invocations.acquire_named).targets(targets)
    worker = DeliveryWorker(
        queue,
        targets,
        hooks=delivery_metrics,
        wake=wake,
        lease_seconds=lease_seconds,
        refresh=rulebook.reload_named,
    )
    router = Router(
        event_log,
        queue,
        rulebook.rule_set,
        rulebook.buses,
        wake=wake,
        hooks=RoutedSignal(delivery_metrics, stores.signals),
        owns=bus_owner(stores.leases, "router", rulebook.buses) if routes else None,
        site=site_routing,
        has_rules=control.rules.any_enabled,
    )
    archiver = Archiver(
        event_log,
        stores.archive_store,
        control,
        hooks=ArchiverMetrics(metrics),
        leases=stores.leases if routes else None,
    )
    if routes:
        # Only where they run: beside a pipeline process, the gateway called both on every
        # ingest request for nothing (about 1.5 % of its event loop's time).
        stores.log_watch.subscribe(router.notify)
        stores.log_watch.subscribe(archiver.notify)
    replays = ReplayRunner(
        control,
        stores.archive_store,
        event_log,
        queue,
        rulebook.rule_set,
        rate=settings.replay_rate,
        max_running=settings.max_concurrent_replays,
        wake=wake,
        hooks=ReplayMetrics(metrics),
    )
    erasures = ErasureRunner(
        control,
        event_log,
        queue,
        stores.archive_store,
        suppressions=suppressions,
        metrics=ErasureMetrics(metrics),
    )
    return Pipeline(rulebook, router, archiver, worker, replays, erasures, session_pool)


def _platform(
    settings: Settings,
    stores: Stores,
    pipeline: Pipeline,
    authenticator: Authenticator,
    bus_directory: BusDirectory,
    suppressions: Suppressions,
    ingest_metrics: IngestMetrics,
    tracing: Tracing | None,
    kinds: TargetKinds,
    quotas: Quotas,
) -> Platform:
    control = stores.control
    buses = Buses(control, max_buses=settings.max_buses_per_tenant)
    targets = TargetRegistry(
        control,
        allow_private_targets=settings.allow_private_targets,
        function_modules=settings.function_modules,
        kinds=kinds,
    )
    request_rate = quotas.rate("requests", "requests_per_second", settings.tenant_request_rate)
    return Platform(
        gate=Gate(authenticator, request_rate),
        ingest=Ingest(
            control=control,
            buses=bus_directory,
            event_log=stores.event_log if tracing is None else tracing.event_log(stores.event_log),
            log_watch=stores.log_watch,
            suppressions=suppressions,
            metrics=ingest_metrics,
            limits=BindingLimits(
                max_body_size=settings.max_body_bytes, max_batch_size=settings.max_batch_events
            ),
            event_rate=quotas.rate("events", "events_per_second", settings.tenant_event_rate),
            request_rate=request_rate,
            quotas=quotas,
        ),
        tail=Tail(bus_directory, stores.event_log, stores.log_watch, routes=stores.queue),
        buses=buses,
        rules=Rules(
            control,
            buses,
            targets,
            max_rules=settings.max_rules_per_bus,
            event_log=stores.event_log,
        ),
        archives=Archives(
            control=control,
            buses=buses,
            event_log=stores.event_log,
            store=stores.archive_store,
            archiver=pipeline.archiver,
            signals=stores.signals,
        ),
        replays=Replays(control, stores.queue, max_running=settings.max_concurrent_replays),
        erasures=Erasures(control, buses, pipeline.erasures),
        keys=Keys(control),
        schemas=Schemas(control),
        connections=Connections(control, allow_private=settings.allow_private_targets),
        grants=Grants(control, buses),
        dead_letters=DeadLetters(
            buses,
            stores.queue,
            redriven=functools.partial(_redriven, pipeline.worker, stores.signals),
        ),
        history=History(
            buses,
            stores.event_log,
            stores.queue if isinstance(stores.queue, DeliveryHistory) else None,
            control=control,
            sink=stores.queue,
            redelivered=functools.partial(_redriven, pipeline.worker, stores.signals),
        ),
        failed_events=FailedEvents(control, buses, stores.event_log, stores.log_watch),
        tenants=Tenants(control),
        readiness=Readiness(control, stores.event_log),
        quotas=quotas,
    )


def _duties(
    settings: Settings,
    stores: Stores,
    pipeline: Pipeline,
    metrics: Metrics,
    delivery_metrics: DeliveryMetrics,
    platform: Platform,
    backup_parts: Sequence[BackupPart] = (),
) -> dict[Role, list[Duty]]:
    """What each role runs."""
    control, archive_store = stores.control, stores.archive_store
    worker = pipeline.worker
    grace = min(10.0, settings.shutdown_timeout_seconds)
    retention = Retention(
        control,
        stores.event_log,
        stores.queue,
        log_retention=timedelta(hours=settings.log_retention_hours),
        interval=settings.retention_interval_seconds,
        metrics=RetentionMetrics(metrics),
        archive_floors=functools.partial(archive_floors, control, archive_store),
        trim_archives=functools.partial(trim_archives, control, archive_store),
        history=stores.queue if isinstance(stores.queue, DeliveryHistory) else None,
    )
    scheduler = Scheduler(stores.leases, retention, pipeline.replays, pipeline.erasures)

    async def refresh_depth() -> None:
        await report_depth(stores.queue.depth, delivery_metrics.set_depth, DEPTH_REFRESH_SECONDS)

    ticker = RuleTicker(control, platform.ingest.publish, version=pipeline.rulebook.version)
    scheduling = [
        scheduler.duty(),
        _singleton(stores.leases, "rule-schedules", ticker.run),
        # The schedulers report the queue's depth, not the workers: scaled to zero when nothing
        # is pending, the workers would otherwise take with them what wakes them up again.
        Duty("queue-depth", refresh_depth),
    ]
    if settings.backup_dir is not None:
        backups = ScheduledBackups(
            settings.data_dir,
            settings.backup_dir,
            interval=settings.backup_interval,
            keep=settings.backup_keep,
            metrics=BackupMetrics(metrics),
            parts=backup_parts,
        )
        scheduling.append(Duty("backups", backups.run, backups.stop, ends=True))
    return {
        Role.ROUTER: [
            Duty("router", pipeline.router.run, pipeline.router.stop, ends=True),
            Duty("archiver", pipeline.archiver.run, pipeline.archiver.stop, ends=True),
        ],
        Role.DELIVERY: [Duty("delivery-worker", worker.run, lambda: worker.stop(grace=grace))],
        Role.SCHEDULER: scheduling,
    }


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


async def report_depth(
    depth: Callable[[], Awaitable[Sequence[QueueDepth]]],
    report: Callable[[Sequence[QueueDepth]], None],
    every: float,
) -> None:
    """Report the queue's depth every `every` seconds, for as long as the process runs.

    A failed read (the queue not open yet at start, a JetStream timeout) is logged and tried
    again at the next turn: a duty that ended on one froze the depth metric for good, and with
    it the autoscaler that reads it (a restored installation's first read failed so in CI)."""
    failing = False
    while True:
        try:
            report(await depth())
        except Exception as exc:
            if not failing:
                log.warning("reading the delivery queue's depth failed", error=repr(exc))
            failing = True
        else:
            if failing:
                log.info("the delivery queue's depth is read again")
            failing = False
        await asyncio.sleep(every)

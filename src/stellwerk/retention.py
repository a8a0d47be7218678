"""Retention: the scheduler's background trim of the event log and of the archives.

The log keeps every event for `--log-retention-hours` (7 days by default), and longer while a
consumer still needs it: an event is trimmed only once it is older than that *and* its bus's
router has routed it *and* the bus's archiver has looked at it (when the bus has archives). So a
stuck router or archiver makes the log grow rather than lose events it has not handled. Each
archive keeps its own copies for its `retention_days` (0: forever), independently of the log.

SQLite reuses the pages that a trim frees, so a data directory under steady load settles at the
size of one retention period (see `tests/storage/test_sqlite_retention.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from prometheus_client import Counter, Gauge

from stellwerk.clock import utc_now
from stellwerk.ops import Metrics, cancelled_meanwhile
from stellwerk.refs import BusRef
from stellwerk.seams import DeliveryHistory, EventLog, RouteCursors
from stellwerk.storage.control import ControlPlane

log = structlog.get_logger("stellwerk.retention")

ArchiveFloors = Callable[[], Awaitable[dict[BusRef, int]]]
"""Per bus with archives, `(tenant name, bus)`: the position its archiver is done up to."""
ArchiveTrim = Callable[[datetime], Awaitable[int]]
"""Apply every archive's retention at this time; return how many archived events went."""


class RetentionMetrics:
    def __init__(self, metrics: Metrics) -> None:
        self.trimmed = Counter(
            "stellwerk_retention_trimmed_events_total",
            "Events removed by retention, from the log or from archives; with"
            ' store="history", delivery attempts.',
            ["store"],
            registry=metrics.registry,
        )
        self.last_run = Gauge(
            "stellwerk_retention_last_run_timestamp_seconds",
            "When retention last finished a pass (Unix time).",
            registry=metrics.registry,
        )


@dataclass(frozen=True, slots=True)
class RetentionPass:
    log_events: int
    archived_events: int


class Retention:
    """Trims the log and the archives now (`run_once`) or every `interval` seconds (`run`)."""

    def __init__(
        self,
        control: ControlPlane,
        event_log: EventLog,
        queue: RouteCursors,
        *,
        log_retention: timedelta,
        interval: float,
        archive_floors: ArchiveFloors | None = None,
        trim_archives: ArchiveTrim | None = None,
        history: DeliveryHistory | None = None,
        metrics: RetentionMetrics | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._control = control
        self._log = event_log
        self._queue = queue
        self._log_retention = log_retention
        self._interval = interval
        self._archive_floors = archive_floors
        self._trim_archives = trim_archives
        self._history = history
        self._metrics = metrics
        self._clock = clock
        self._stopped = asyncio.Event()

    async def keep_positions(self) -> dict[BusRef, int]:
        """Per bus, the position above which its events are still needed by a consumer."""
        floors = await self._archive_floors() if self._archive_floors is not None else {}
        keep: dict[BusRef, int] = {}
        for tenant in await self._control.list_tenants():
            for bus in await self._control.list_buses(tenant.id):
                key = tenant.ref.bus(bus.name)
                routed = await self._queue.cursor(key)
                archived = floors.get(key)
                keep[key] = routed if archived is None else min(routed, archived)
        return keep

    async def run_once(self) -> RetentionPass:
        now = self._clock()
        keep = await self.keep_positions()
        trimmed = await self._log.trim(now - self._log_retention, keep=keep)
        archived = await self._trim_archives(now) if self._trim_archives is not None else 0
        # Delivery history is kept as long as the log keeps events.
        attempts = 0
        if self._history is not None:
            attempts = await self._history.trim_history(now - self._log_retention)
        if self._metrics is not None:
            self._metrics.trimmed.labels("log").inc(trimmed)
            self._metrics.trimmed.labels("archive").inc(archived)
            self._metrics.trimmed.labels("history").inc(attempts)
            self._metrics.last_run.set(self._clock().timestamp())
        if trimmed or archived or attempts:
            log.info(
                "retention_trimmed",
                log_events=trimmed,
                archived_events=archived,
                delivery_attempts=attempts,
            )
        return RetentionPass(trimmed, archived)

    async def run(self) -> None:
        """Trim every `interval` seconds until `stop()` (returns at once if stopped before it
        began: `restart()` first to run again); a failed pass is logged and retried."""
        while not self._stopped.is_set():
            try:
                await self.run_once()
            except Exception:
                if cancelled_meanwhile():
                    raise  # a cancellation the database driver turned into an error
                log.exception("retention_failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._stopped.wait()

    def stop(self) -> None:
        """End `run` after the pass under way, if any (not halfway through a query)."""
        self._stopped.set()

    def restart(self) -> None:
        """Let `run` run again after a `stop()`."""
        self._stopped.clear()

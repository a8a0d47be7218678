"""Scheduled backups: the scheduler copies the embedded data directory every interval, keeps N.

Each backup is `stellwerk backup` (`storage.sqlite.backup`) into a folder named by its time,
written under a hidden `.partial` name and renamed once complete, so a folder with the plain
name is always a whole backup; a copy cut short by a stop or a crash is removed by the next
run. The schedule follows the newest complete backup, so restarting the process does not take
one more (nor skip one that is due).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import structlog
from prometheus_client import Counter, Gauge

from stellwerk.clock import utc_now
from stellwerk.ops import Metrics
from stellwerk.storage.sqlite import BackupError, BackupPart, backup

log = structlog.get_logger("stellwerk.backups")

PREFIX: Final = "stellwerk-"
PARTIAL: Final = ".partial"
_STAMP: Final = "%Y%m%dT%H%M%SZ"
_NAME: Final = re.compile(rf"{PREFIX}(\d{{8}}T\d{{6}}Z)")
# After a failed backup (a full disk, say), the next try comes this long after, not at once.
RETRY_SECONDS: Final = 300.0


class BackupMetrics:
    def __init__(self, metrics: Metrics) -> None:
        registry = metrics.registry
        self.last_success = Gauge(
            "stellwerk_backup_last_success_timestamp_seconds",
            "When the newest complete scheduled backup was taken (Unix time).",
            registry=registry,
        )
        self.duration = Gauge(
            "stellwerk_backup_duration_seconds",
            "How long the last scheduled backup took.",
            registry=registry,
        )
        self.size = Gauge(
            "stellwerk_backup_size_bytes", "Size of the last scheduled backup.", registry=registry
        )
        self.failures = Counter(
            "stellwerk_backup_failures_total", "Scheduled backups that failed.", registry=registry
        )


@dataclass(frozen=True, slots=True)
class Taken:
    path: Path
    seconds: float
    bytes: int
    removed: list[Path]


def complete_backups(folder: Path) -> list[tuple[datetime, Path]]:
    """The complete scheduled backups in `folder`, oldest first."""
    found = []
    if folder.is_dir():
        for entry in folder.iterdir():
            match = _NAME.fullmatch(entry.name)
            if match and entry.is_dir():
                taken = datetime.strptime(match.group(1), _STAMP).replace(tzinfo=UTC)
                found.append((taken, entry))
    return sorted(found)


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class ScheduledBackups:
    """Takes a backup of `data_dir` (with capabilities' `parts`) into `folder` every `interval`
    seconds, keeping `keep`."""

    def __init__(
        self,
        data_dir: Path,
        folder: Path,
        *,
        interval: float,
        keep: int,
        metrics: BackupMetrics,
        parts: Sequence[BackupPart] = (),
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.data_dir = data_dir
        self.parts = parts
        self.folder = folder
        self.interval = interval
        self.keep = keep
        self.metrics = metrics
        self.clock = clock
        self._stopped = asyncio.Event()

    def take(self) -> Taken:
        """One backup now, then the rotation; blocking (run it in a thread)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for leftover in self.folder.glob(f".{PREFIX}*{PARTIAL}"):
            shutil.rmtree(leftover, ignore_errors=True)  # a copy a stop or crash cut short
        started = time.monotonic()
        name = PREFIX + self.clock().strftime(_STAMP)
        final = self.folder / name
        if final.exists():
            raise BackupError(f"{final} exists already (two backups within one second)")
        partial = self.folder / f".{name}{PARTIAL}"
        try:
            backup(self.data_dir, partial, self.parts)
            partial.rename(final)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        removed = []
        for _, old in complete_backups(self.folder)[: -self.keep]:
            shutil.rmtree(old)
            removed.append(old)
        return Taken(final, time.monotonic() - started, _size(final), removed)

    def due_in(self) -> float:
        """Seconds until the next backup: at once when there is none, else newest + interval."""
        backups = complete_backups(self.folder)
        if not backups:
            return 0.0
        newest, _ = backups[-1]
        self.metrics.last_success.set(newest.timestamp())
        return max(0.0, self.interval - (self.clock() - newest).total_seconds())

    async def run(self) -> None:
        while not self._stopped.is_set():
            delay = await asyncio.to_thread(self.due_in)
            if delay > 0 and await self._wait(delay):
                return
            try:
                taken = await asyncio.to_thread(self.take)
            except (BackupError, OSError) as exc:
                self.metrics.failures.inc()
                log.error("backup failed", folder=str(self.folder), error=str(exc))
                if await self._wait(RETRY_SECONDS):
                    return
                continue
            self.metrics.last_success.set(self.clock().timestamp())
            self.metrics.duration.set(taken.seconds)
            self.metrics.size.set(taken.bytes)
            log.info(
                "backup taken",
                path=str(taken.path),
                seconds=round(taken.seconds, 3),
                bytes=taken.bytes,
                removed=[p.name for p in taken.removed],
            )

    async def _wait(self, seconds: float) -> bool:
        """Sleep, or return True at once when asked to stop."""
        try:
            await asyncio.wait_for(self._stopped.wait(), seconds)
        except TimeoutError:
            return False
        return True

    def stop(self) -> None:
        self._stopped.set()

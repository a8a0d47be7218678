"""Failed deliveries in the log: a target's first failure at once, then one warning per target
per interval with counts, so an operator sees a failing target without `/metrics` and an outage
costs a line a minute, not one per attempt (docs/delivery.md, "stellwerk.delivery.worker")."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

import structlog

from stellwerk.seams import TargetKey

DEFAULT_INTERVAL_SECONDS: Final = 60.0

log = structlog.get_logger("stellwerk.delivery")

GaveUp = Literal["dead_lettered", "dropped"]


@dataclass(slots=True)
class _Tally:
    since: float
    failed_attempts: int = 0
    dead_lettered: int = 0
    dropped: int = 0
    last_error: str = ""


class FailureLog:
    """Counts failures per target and writes them, rate-limited; `clock` is monotonic seconds."""

    def __init__(
        self,
        interval: float = DEFAULT_INTERVAL_SECONDS,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self._clock = clock
        self._tallies: dict[TargetKey, _Tally] = {}
        self._written: dict[TargetKey, float] = {}

    def failed(
        self, key: TargetKey, reason: str, *, attempted: bool = True, gave_up: GaveUp | None = None
    ) -> None:
        """An attempt failed (`attempted`), and the delivery was retried or, with `gave_up`,
        dead-lettered or dropped (without an attempt: its rule or target is gone)."""
        now = self._clock()
        tally = self._tallies.get(key)
        if tally is None:
            # A line covers the time since the target's last line (or its first failure).
            tally = self._tallies[key] = _Tally(since=self._written.get(key, now))
        tally.failed_attempts += attempted
        tally.dead_lettered += gave_up == "dead_lettered"
        tally.dropped += gave_up == "dropped"
        tally.last_error = reason
        written = self._written.get(key)
        if written is None or now - written >= self.interval:
            self._write(key, now)

    def flush(self, *, everything: bool = False) -> None:
        """Write the counts of every target whose interval has passed (all, with `everything`)."""
        if not self._tallies and not self._written:
            return
        now = self._clock()
        for key in list(self._tallies):
            if everything or now - self._written.get(key, now - self.interval) >= self.interval:
                self._write(key, now)
        # A target quiet for a whole interval starts afresh: its next failure is written at once.
        for key, written in list(self._written.items()):
            if key not in self._tallies and now - written >= self.interval:
                del self._written[key]

    def _write(self, key: TargetKey, now: float) -> None:
        tally = self._tallies.pop(key)
        self._written[key] = now
        log.warning(
            "delivery_failures",
            tenant=key.tenant,
            bus=key.bus,
            rule=key.rule,
            target=key.target_id,
            failed_attempts=tally.failed_attempts,
            dead_lettered=tally.dead_lettered,
            dropped=tally.dropped,
            last_error=tally.last_error,
            seconds=round(now - tally.since, 1),
        )

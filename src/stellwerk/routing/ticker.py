"""The ticks of scheduled rules: each becomes one Scheduled Event on the rule's bus, which the
router sends to that rule's targets alone (`stellwerk.events.scheduled`).

One process ticks at a time (a singleton duty of the scheduler role, lease `rule-schedules`).
A tick's event id is fixed by the rule and the tick, so a tick made twice (the lease changing
hands, a restart within the grace) is one event in the log: at most once per tick across all
processes. Ticks are looked for in the time since the last look; on start, in the last
`grace` (60 s): a tick missed while no process ticked for longer is skipped, as EventBridge does,
never sent late or twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

import structlog

from stellwerk.clock import utc_now
from stellwerk.events import CloudEvent
from stellwerk.events.scheduled import scheduled_event
from stellwerk.refs import TenantRef
from stellwerk.rules import InvalidScheduleError, parse_schedule
from stellwerk.storage.control import ControlPlane, ScheduledRule

log = structlog.get_logger("stellwerk.routing")

Publish = Callable[[TenantRef, str, Sequence[CloudEvent]], Awaitable[object]]

GRACE = timedelta(seconds=60)
INTERVAL_SECONDS = 1.0
# With `version`, the scheduled rules are read again when it moves, and at least this often
# (a change no signal brought: made by a tool without a server, or a tenant removed).
REFRESH_SECONDS = 30.0


class RuleTicker:
    def __init__(
        self,
        control: ControlPlane,
        publish: Publish,
        *,
        clock: Callable[[], datetime] = utc_now,
        interval: float = INTERVAL_SECONDS,
        version: Callable[[], int] | None = None,
        refresh_seconds: float = REFRESH_SECONDS,
    ) -> None:
        """`version()` (the rule book's) moves whenever rules were read again after a change:
        with it, the scheduled rules are kept between rounds instead of read every second."""
        self._control = control
        self._publish = publish
        self._clock = clock
        self._interval = interval
        self._version = version
        self._refresh_seconds = refresh_seconds
        self._kept: tuple[int, float, list[ScheduledRule]] | None = None  # version, until, rules
        # When each rule (with its schedule as it was) was last looked at.
        self._looked: dict[tuple[str, str, str, str], datetime] = {}

    async def run(self) -> None:
        """Look for due ticks every `interval` until cancelled. A round under way when the
        duty is stopped is finished first: a control-plane query cancelled halfway leaves
        SQLAlchemy's aiosqlite adapter closing its connection forever (see `RoleSupervisor`)."""
        self._looked.clear()  # a new holder of the lease starts from the grace
        self._kept = None
        while True:
            round_ = asyncio.ensure_future(self.step())
            try:
                await asyncio.shield(round_)
            except asyncio.CancelledError:
                await asyncio.wait([round_])
                if not round_.cancelled() and round_.exception() is not None:
                    log.error("scheduled rules: a round failed", error=str(round_.exception()))
                raise
            except Exception:
                log.exception("scheduled rules: a round failed")
            await asyncio.sleep(self._interval)

    async def step(self, now: datetime | None = None) -> int:
        """Send the ticks due since the last look; how many were sent."""
        now = now or self._clock()
        sent = 0
        seen = set()
        for rule in await self._scheduled():
            key = (rule.tenant.id, rule.bus, rule.name, rule.schedule)
            seen.add(key)
            after = self._looked.get(key, now - GRACE)
            self._looked[key] = now
            try:
                ticks = parse_schedule(rule.schedule).ticks(after, now, rule.created_at)
            except InvalidScheduleError:
                continue  # checked when saved; an expression this version refuses is skipped
            if not ticks:
                continue
            event = scheduled_event(rule.tenant.name, rule.bus, rule.name, ticks[-1])
            await self._publish(rule.tenant, rule.bus, [event])
            sent += 1
        for gone in self._looked.keys() - seen:
            del self._looked[gone]
        return sent

    async def _scheduled(self) -> list[ScheduledRule]:
        if self._version is None:
            return await self._control.rules.scheduled()
        version, now = self._version(), time.monotonic()
        kept = self._kept
        if kept is None or kept[0] != version or now >= kept[1]:
            # The version is taken before the read: a change during it is read again next time.
            rules = await self._control.rules.scheduled()
            kept = self._kept = (version, now + self._refresh_seconds, rules)
        return kept[2]

"""Taking in a change of configuration: the caches of this process forget it, the other
processes hear of it.

The control plane announces every change once its transaction commits (`ChangeFeed`), and
`Caches.announce` listens there: so no use case publishes a change by hand. Changes made in
other processes arrive through the signals and are only taken in (`take`).
"""

from __future__ import annotations

import structlog

from stellwerk.delivery import BusAccess
from stellwerk.erasure import Suppressions
from stellwerk.routing import Archiver, ReplayRunner, Router, RuleBook
from stellwerk.seams import Change, Signals
from stellwerk.service.access import Authenticator
from stellwerk.service.quotas import Quotas
from stellwerk.storage.control import BusDirectory

log = structlog.get_logger("stellwerk")


class Caches:
    """What this process keeps of the configuration, and how each change reaches it."""

    def __init__(
        self,
        *,
        signals: Signals,
        rulebook: RuleBook,
        buses: BusDirectory,
        bus_access: BusAccess,
        authenticator: Authenticator,
        suppressions: Suppressions,
        archiver: Archiver,
        router: Router,
        replays: ReplayRunner,
        quotas: Quotas,
    ) -> None:
        self._signals = signals
        self._rulebook = rulebook
        self._buses = buses
        self._bus_access = bus_access
        self._authenticator = authenticator
        self._suppressions = suppressions
        self._archiver = archiver
        self._router = router
        self._replays = replays
        self._quotas = quotas

    async def announce(self, change: Change) -> None:
        """A change committed here: take it in, then tell the other processes."""
        await self.take(change)
        await self._signals.changed(change)

    async def take(self, change: Change) -> None:
        """Take in a change made here or, through the signals, in another process."""
        bus, name = change.bus, change.name
        match change.kind:
            case "grant":
                if bus is not None:
                    self._bus_access.forget(change.owner, bus, change.grantee)
            case "rules":
                await self._rulebook.reload(change.tenant_id, bus)
                self._router.rules_changed()
            case "bus":
                if bus is not None:
                    self._buses.forget_bus(change.tenant_id, bus)
                await self._rulebook.reload(change.tenant_id, bus)
                self._router.rules_changed()
            case "schema":
                if name is not None:
                    self._buses.forget_schema(change.tenant_id, name)
            case "key":
                if name is not None:
                    self._authenticator.forget(name)
            case "suppression":
                if bus is not None:
                    self._suppressions.forget(change.tenant_id, bus)
            case "archive":
                await self._archiver.reload()
            case "replay":
                self._replays.notify()
            case "limits":
                self._quotas.forget(change.tenant_id)
            case "replay_cancelled":
                if name is not None:
                    self._replays.cancel(change.tenant_id, name)

    async def resync(self) -> None:
        """Signals may have been missed (the connection to NATS broke): reload what is cached
        without a time to live. Caches with one expire on their own."""
        try:
            await self._rulebook.load()
            self._router.rules_changed()
            await self._archiver.reload()
        except Exception:
            log.exception("resync_failed")  # the next reconnect or change tries again
        self._replays.notify()

"""Taking in a change of configuration: the caches of this process forget it, the other
processes hear of it.

The control plane announces every change once its transaction commits (`ChangeFeed`), and
`Caches.announce` listens there: so no use case publishes a change by hand. Changes made in
other processes arrive through the signals and are only taken in (`take`).
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from stellwerk.delivery import BusAccess
from stellwerk.erasure import Suppressions
from stellwerk.routing import Archiver, ReplayRunner, Router, RuleBook
from stellwerk.seams import Change, Signals
from stellwerk.service.access import Authenticator
from stellwerk.service.quotas import Quotas
from stellwerk.storage.control import BusDirectory

log = structlog.get_logger("stellwerk")


class CapabilityChanges:
    """Where a capability hears of changes to what it keeps (a `Change` of kind `capability`
    named by it), committed in this process or another: a loop with nothing to do waits for one
    instead of polling."""

    def __init__(self) -> None:
        self._listeners: dict[str, list[Callable[[], None]]] = {}

    def listen(self, capability: str, listener: Callable[[], None]) -> None:
        self._listeners.setdefault(capability, []).append(listener)

    def heard(self, capability: str | None) -> None:
        """`capability` changed (None: any may have; signals were missed)."""
        if capability is None:
            listeners = [each for some in self._listeners.values() for each in some]
        else:
            listeners = self._listeners.get(capability, [])
        for listener in listeners:
            listener()


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
        capabilities: CapabilityChanges,
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
        self._capabilities = capabilities

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
            case "capability":
                if name is not None:
                    self._capabilities.heard(name)

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
        self._capabilities.heard(None)

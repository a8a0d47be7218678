"""What one process tells the others: events were appended, deliveries routed, a setting changed.

Signals are hints, never the truth (that is in the stores). `LocalSignals` is the embedded mode,
with nobody else to tell; `NatsSignals` in `stellwerk.storage.signals` uses core NATS
(docs/storage.md, "Signals and leases").
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal, Protocol, Self

import msgspec

from stellwerk.refs import BusRef, TenantId, TenantName

ChangeKind = Literal[
    "rules",
    "bus",
    "schema",
    "grant",
    "key",
    "suppression",
    "archive",
    "replay",
    "replay_cancelled",
    "limits",
    "capability",
]


class Change(msgspec.Struct, frozen=True, omit_defaults=True):
    """A change of configuration that every process must take in.

    - `rules`: the rules of `bus` (or, without `bus`, every bus of the tenant: a connection
      changed) — rule books reload them;
    - `bus`: the bus was created, changed or deleted — bus caches forget it, rule books reload;
    - `schema`: the schema of event type `name` — schema caches forget it;
    - `grant`: tenant `tenant` (a name) granted or revoked `bus` to tenant `name`;
    - `key`: API key `name` was revoked;
    - `suppression`: an erasure added suppressions on `bus`;
    - `archive`: an archive of `bus` was created, changed or deleted — archivers reload;
    - `replay`: a replay was created — the scheduler looks for work;
    - `replay_cancelled`: replay `name` was cancelled — the scheduler stops it;
    - `limits`: the tenant's quotas were set or cleared — quota caches forget them;
    - `capability`: what capability `name` keeps of the tenant changed — its listeners hear it
      (`stellwerk.service.CapabilityChanges`).

    On the wire `tenant` is the tenant's id, except for `grant`, where it is the owner's name
    (and `name` the grantee's). Make and read one through the typed names: `Change.of` and
    `tenant_id` for every kind but `grant`, `Change.grant`, `owner` and `grantee` for a grant.
    """

    kind: ChangeKind
    tenant: str
    bus: str | None = None
    name: str | None = None

    @classmethod
    def of(
        cls, kind: ChangeKind, tenant: TenantId, bus: str | None = None, name: str | None = None
    ) -> Change:
        if kind == "grant":
            raise ValueError("a grant names its tenants by name: Change.grant")
        return cls(kind, tenant, bus, name)

    @classmethod
    def grant(cls, owner: TenantName, bus: str, grantee: TenantName) -> Change:
        """Tenant `owner` granted or revoked its `bus` to tenant `grantee`."""
        return cls("grant", owner, bus, grantee)

    @property
    def tenant_id(self) -> TenantId:
        """The id of the tenant whose configuration changed (every kind but `grant`)."""
        if self.kind == "grant":
            raise ValueError("a grant's change names its tenants by name")
        return TenantId(self.tenant)

    @property
    def owner(self) -> TenantName:
        """A grant's owner, by name."""
        if self.kind != "grant":
            raise ValueError(f"a {self.kind} change names its tenant by id")
        return TenantName(self.tenant)

    @property
    def grantee(self) -> TenantName:
        """A grant's grantee, by name."""
        if self.kind != "grant" or self.name is None:
            raise ValueError(f"a {self.kind} change names no grantee")
        return TenantName(self.name)


class Signals(Protocol):
    async def start(
        self,
        *,
        on_appended: Callable[[BusRef], None],
        on_routed: Callable[[], None],
        on_changed: Callable[[Change], Awaitable[None]],
        on_resync: Callable[[], Awaitable[None]],
    ) -> None:
        """Start listening; the callbacks receive what *other* processes sent."""
        ...

    async def close(self) -> None: ...

    def appended(self, bus: BusRef) -> None:
        """Events were appended to the bus (coalesced; sent soon, not awaited)."""
        ...

    def routed(self) -> None:
        """Deliveries were routed (coalesced)."""
        ...

    async def changed(self, change: Change) -> None:
        """Send a change; returns once it is on its way."""
        ...


class LocalSignals:
    """One process: nobody else to tell."""

    async def start(
        self,
        *,
        on_appended: Callable[[BusRef], None],
        on_routed: Callable[[], None],
        on_changed: Callable[[Change], Awaitable[None]],
        on_resync: Callable[[], Awaitable[None]],
    ) -> None:
        pass

    async def close(self) -> None:
        pass

    def appended(self, bus: BusRef) -> None:
        pass

    def routed(self) -> None:
        pass

    async def changed(self, change: Change) -> None:
        pass

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

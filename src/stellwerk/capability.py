"""The seam a capability plugs into: what it brings (routes, a way to open), what it gets.

A capability (status pages, tracking, sites, ...) is a package of its own that holds its model,
its logic, its routes and its templates. It declares one `Capability`; the composition root
mounts its routes and, once the core's services are open, opens it with a `CapabilityContext`:
the application layer's facades (`platform`), the database its own tables live in, the
process's settings, metrics and roles. What it opens says what it runs in which role and how
it closes. It never reaches into the control plane or a store: it calls the facades, and keeps
its own tables behind a store of its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal, Protocol

import aiohttp
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from starlette.routing import BaseRoute
from yarl import URL

from stellwerk.api import Answer, Answerer, Deferred, Endpoint
from stellwerk.auth import Principal
from stellwerk.config import Role, Settings
from stellwerk.delivery import (
    Delivered,
    GiveUp,
    Outcome,
    RetryLater,
    Target,
    TargetKind,
    TargetKinds,
)
from stellwerk.delivery.targets import (
    AddressPolicy,
    SessionPool,
    TransferError,
    UnsafeAddressError,
)
from stellwerk.ops import Metrics
from stellwerk.refs import TenantId
from stellwerk.roles import Duty
from stellwerk.routing import SiteRouting, Standby
from stellwerk.rules import InvalidRuleError, TargetSpec, UnsafeTargetError
from stellwerk.seams import Change, Delivery
from stellwerk.service import CapabilityChanges, Platform
from stellwerk.storage.control import ChangeFeed, migrate
from stellwerk.storage.sqlite import BackupPart, copy_database

_KEPT_URLS: Final = 256  # URLs `Outgoing.post` keeps parsed (peer sites: a handful)

# What a capability needs to plug in, in one place: besides the seam itself, the values of a
# target type it brings (a delivery, its outcomes, the target's saved spec).
__all__ = [
    "Answer",
    "Answerer",
    "BackupPart",
    "Capability",
    "CapabilityContext",
    "Database",
    "Deferred",
    "Delivered",
    "Delivery",
    "Directory",
    "Duty",
    "EndpointState",
    "Facades",
    "GiveUp",
    "GlobalEndpoint",
    "GlobalEndpointSpec",
    "GlobalEndpoints",
    "InvalidRuleError",
    "Listing",
    "NoAnswer",
    "Opened",
    "Outcome",
    "Outgoing",
    "ReplicationMode",
    "RetryLater",
    "Role",
    "SiteRouting",
    "Standby",
    "Target",
    "TargetKind",
    "TargetKinds",
    "TargetSpec",
    "UnsafeUrl",
    "copy_database",
    "run_migration_environment",
    "table_metadata",
]


@dataclass(frozen=True, slots=True)
class Database:
    """The control plane's database (SQLite in embedded mode, PostgreSQL in scale-out), lent to
    a capability for tables of its own. It migrates them on its own chain of Alembic revisions,
    versioned in a table of its own, apart from the control plane's."""

    engine: AsyncEngine
    changes: ChangeFeed | None = None  # None: a tool without a server, nobody to tell

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def migrate(self, location: Path, *, version_table: str) -> None:
        await migrate.upgrade(self.engine, "heads", location=location, version_table=version_table)

    @contextlib.asynccontextmanager
    async def announcing(
        self, capability: str, tenant_id: TenantId
    ) -> AsyncIterator[AsyncConnection]:
        """A write transaction that, once committed, `capability`'s listeners in every process
        hear of (`CapabilityContext.changes`); one that rolls back tells nobody."""
        if self.changes is None:
            async with self.engine.begin() as conn:
                yield conn
            return
        async with self.changes.begin() as conn:
            self.changes.changed(Change.of("capability", tenant_id, name=capability))
            yield conn


def table_metadata() -> sa.MetaData:
    """The metadata of a capability's own tables, with the constraint and index names that every
    chain's migrations spell out."""
    return sa.MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


def run_migration_environment(metadata: sa.MetaData, version_table: str) -> None:
    """The body of a capability's Alembic `env.py`: its chain runs on the connection that
    `Database.migrate` hands in, versioned in `version_table`."""
    from alembic import context  # only while Alembic runs an environment

    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through stellwerk.capability.Database.migrate")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=version_table,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


class UnsafeUrl(ValueError):
    """An address outgoing requests may not go to (the SSRF guard); the message says why."""


class NoAnswer(Exception):
    """An outgoing request got no answer (refused by the guard, no connection, out of time);
    the message says why."""


class Outgoing:
    """Outgoing HTTP for a capability's own requests (a synthetic check, a subscriber's
    confirmation), under the same guard as deliveries: no private, loopback or link-local
    address unless the operator allowed them (`--allow-private-targets`), checked when a URL is
    saved and again, by the resolver, on every connection."""

    def __init__(self, pool: SessionPool, policy: AddressPolicy) -> None:
        self._pool = pool
        self._policy = policy
        # The transport keeps a URL's text made once per URL object: one object per URL here.
        self._urls: dict[str, URL] = {}

    def check_url(self, url: str) -> None:
        """Raises `UnsafeUrl` saying why requests may not go to `url`."""
        try:
            self._policy.check_url(url)
        except UnsafeTargetError as exc:
            raise UnsafeUrl(exc.reason) from None

    def session(self) -> aiohttp.ClientSession:
        """The process's guarded session (shared: never close it; no cookies, no proxies)."""
        return self._pool.session(self._policy)

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], within: float
    ) -> tuple[int, bytes]:
        """POST `body` to `url` through the deliveries' transport, all of it within `within`
        seconds: the answer's status and (the first 64 KiB of) its body; `NoAnswer` if none came.

        For requests on a hot path (a peer site's synchronous replication): on Linux the
        transport is libcurl's, which costs about a third of the session's CPU per request
        (docs/delivery.md). It follows no redirect."""
        target = self._urls.get(url)
        if target is None:
            if len(self._urls) >= _KEPT_URLS:
                self._urls.clear()
            target = self._urls[url] = URL(url)
        try:
            answer = await self._pool.transport(self._policy).post(target, body, headers, within)
        except (TransferError, UnsafeAddressError) as exc:
            raise NoAnswer(str(exc)) from exc
        return answer.status, answer.body


ReplicationMode = Literal["off", "async", "sync"]
EndpointState = Literal["healthy", "failing-over", "failed-over", "failing-back"]


@dataclass(frozen=True, slots=True)
class GlobalEndpointSpec:
    """What another capability may set of a global endpoint: its two sites, the buses it
    carries and how their events are replicated. The health policy is the sites capability's
    own: a new endpoint gets the default one, a changed one keeps what it had."""

    primary: str
    secondary: str
    buses: tuple[str, ...]
    replication: ReplicationMode = "async"


@dataclass(frozen=True, slots=True)
class GlobalEndpoint:
    """A global endpoint as this site sees it (docs/global-endpoints.md): `active` is the site
    that takes its events now, `site` this site, `mirrored` whether the other site has the
    spec as it is here, `reason` why it is in `state` (its last transition's)."""

    name: str
    spec: GlobalEndpointSpec
    state: EndpointState
    active: str
    site: str
    mirrored: bool
    reason: str
    created_at: datetime
    updated_at: datetime


class GlobalEndpoints(Protocol):
    """A tenant's global endpoints, for capabilities other than the one that keeps them (the
    EventBridge API's endpoint operations). Refusals are the facades' `ServiceError`s:
    `NotFound` for no such endpoint, `InvalidRequest` naming the field for a bad spec."""

    async def put(
        self, principal: Principal, name: str, spec: GlobalEndpointSpec
    ) -> tuple[GlobalEndpoint, bool]:
        """Create or change an endpoint; whether it was created."""
        ...

    async def get(self, principal: Principal, name: str) -> GlobalEndpoint: ...

    async def all(self, principal: Principal) -> list[GlobalEndpoint]: ...

    async def delete(self, principal: Principal, name: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Listing:
    """One thing a capability keeps for a tenant, as other capabilities list it (the console's
    sections): its name, a line about it, and the path where it is served, if it is."""

    name: str
    summary: str
    link: str | None = None


class Directory(Protocol):
    """A capability's things of one tenant, listed for the others to show (read only)."""

    async def listing(self, principal: Principal) -> list[Listing]: ...


class Facades:
    """What one capability offers the others, which never import one another: each offers
    its facade while it opens, and the others look it up when they need it (at a call, since
    capabilities open one after the other). None when no capability offers it (not mounted).

    `directories`: what capabilities list of a tenant's things (status pages, tracking
    sources), by title, in the order they were offered."""

    def __init__(self) -> None:
        self._global_endpoints: GlobalEndpoints | None = None
        self._directories: dict[str, Directory] = {}

    def offer_directory(self, title: str, directory: Directory) -> None:
        if title in self._directories:
            raise RuntimeError(f"a directory titled {title!r} is offered already")
        self._directories[title] = directory

    @property
    def directories(self) -> Mapping[str, Directory]:
        return self._directories

    def offer_global_endpoints(self, facade: GlobalEndpoints) -> None:
        if self._global_endpoints is not None:
            raise RuntimeError("global endpoints are offered already")
        self._global_endpoints = facade

    @property
    def global_endpoints(self) -> GlobalEndpoints | None:
        return self._global_endpoints


Singleton = Callable[[str, Callable[[], Coroutine[Any, Any, None]]], Duty]


@dataclass(frozen=True, slots=True)
class CapabilityContext:
    """What a capability gets to open with.

    `singleton(name, body)` makes a duty that runs `body` in one process at a time across the
    whole deployment (under lease `name`, as the scheduler runs), taken over by another process
    when that one dies; put it in the scheduler role's duties. `body` is cancelled when the
    lease is lost and started again when it is regained, so its writes must be idempotent.
    `outgoing`: HTTP to the world, under the deliveries' SSRF guard.

    `key(purpose)` is a secret key for `purpose` (signing cookies or links), derived from the
    process's master key: the same in every process that shares `STELLWERK_SECRET_KEY`, so
    what one gateway signs another verifies, and different for each purpose.

    `target_kinds.register(name, kind)` adds a rule target type (`status`): the kind checks a
    target's `parameters` when a rule is saved and builds what delivers it.

    `facades`: what capabilities offer one another (one for the whole process).
    `site_routing.register(standby)` says, per bus, whether this site routes it now or stands
    by for another site (`stellwerk.routing.standby`; the sites capability, global endpoints).
    `changes.listen(name, listener)`: called when a write made with
    `database.announcing(name, tenant)` commits, in this process or another.
    """

    settings: Settings
    platform: Platform
    database: Database
    metrics: Metrics
    roles: frozenset[Role]
    singleton: Singleton
    outgoing: Outgoing
    key: Callable[[str], bytes]
    target_kinds: TargetKinds
    facades: Facades = field(default_factory=Facades)
    site_routing: SiteRouting = field(default_factory=SiteRouting)
    changes: CapabilityChanges = field(default_factory=CapabilityChanges)


class Opened(Protocol):
    """A capability at work in one process."""

    def duties(self) -> Mapping[Role, Sequence[Duty]]:
        """The loops it runs, by the role that runs them (started and stopped with the core's)."""
        ...

    async def close(self) -> None:
        """Release what it holds; called after its duties have stopped."""
        ...


@dataclass(frozen=True)
class Capability:
    """A capability as the composition root sees it.

    `endpoints` are its API (gated by scope like the core's, described in the OpenAPI
    document); `routes` are what it serves besides, outside the API and without a key (public
    pages, feeds), matched ahead of the API, so their paths must not overlap it;
    `last_routes` are matched after everything else (a catch-all such as a custom domain's).
    Both are served by gateways; a handler finds its opened capability with
    `stellwerk.api.capability_of`. `open` is called once per process, after the core's
    services, in every role.

    `fast_path(opened)`, called once the process is ready, gives a function that answers
    requests ahead of the app's middleware and routing: a whole `Answer` for a request it can
    answer from memory at once, exactly as its route would (the core records the HTTP metrics
    under the answer's route), or None to leave the request to the app. Every request of a
    gateway asks it, so it must be cheap in what it declines.

    `backup_parts`: what `stellwerk backup` (and scheduled backups) copy of the files it keeps
    in the data directory, after the core's databases.
    """

    name: str
    open: Callable[[CapabilityContext], Awaitable[Opened]]
    endpoints: Sequence[Endpoint] = ()
    routes: Sequence[BaseRoute] = field(default_factory=tuple)
    last_routes: Sequence[BaseRoute] = field(default_factory=tuple)
    fast_path: Callable[[Opened], Answerer] | None = None
    backup_parts: Sequence[BackupPart] = ()

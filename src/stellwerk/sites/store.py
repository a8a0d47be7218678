"""The sites capability's records: a tenant's peers and its replication cursors."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from stellwerk.capability import Database
from stellwerk.clock import from_us, to_us
from stellwerk.refs import TenantId
from stellwerk.sites.model import EndpointInput, State, Transition
from stellwerk.sites.tables import cursors, endpoints, peers, routed

MAX_HISTORY = 100
# The name its changes go by (`Database.announcing`): the capability's.
CHANGES: Final = "sites"
_encode = msgspec.json.Encoder().encode
_decode_spec = msgspec.json.Decoder(EndpointInput).decode
_decode_history = msgspec.json.Decoder(list[Transition]).decode


@dataclass(frozen=True, slots=True)
class PeerRecord:
    site: str
    url: str
    sealed_secret: str
    created_at: datetime
    updated_at: datetime
    control_digest: str | None = None
    control_mirrored_at: datetime | None = None
    # How the tenant of the same name on both sites was settled (`mirror.TenantState`).
    tenant_state: str = "pending"
    tenant_detail: str | None = None


@dataclass(frozen=True, slots=True)
class Cursor:
    """How far a peer has acknowledged one bus: its last position and that event's time."""

    bus: str
    position: int
    recorded_us: int


@dataclass(frozen=True, slots=True)
class EndpointRecord:
    tenant_id: TenantId
    name: str
    spec: EndpointInput
    state: State
    active: str
    history: list[Transition]
    mirrored: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Standing:
    """What a standby's router needs to know, read at once (`SitesStore.standing`)."""

    endpoints: list[EndpointRecord]
    routed: dict[tuple[TenantId, str, str], int]  # how far each peer routed each bus
    cursors: dict[tuple[TenantId, str, str], int]  # what each peer has of each bus


class SitesStore:
    def __init__(self, database: Database) -> None:
        self._database = database
        self._engine = database.engine

    def _announcing(self, tenant_id: TenantId) -> AbstractAsyncContextManager[AsyncConnection]:
        """A write of peers or endpoints: every process's sites duties hear of it once it
        commits (`CHANGES`), so that those with nothing to do wait for one, not poll."""
        return self._database.announcing(CHANGES, tenant_id)

    async def put_peer(
        self, tenant_id: TenantId, site: str, url: str, sealed_secret: str, now: datetime
    ) -> bool:
        """Store a peer, or replace its URL and secret; True when it is new."""
        where = (peers.c.tenant_id == tenant_id) & (peers.c.site == site)
        async with self._announcing(tenant_id) as conn:
            found = (await conn.execute(sa.select(peers.c.site).where(where))).first()
            if found is None:
                await conn.execute(
                    peers.insert().values(
                        tenant_id=tenant_id,
                        site=site,
                        url=url,
                        secret=sealed_secret,
                        created_at=to_us(now),
                        updated_at=to_us(now),
                        tenant_state="pending",
                    )
                )
                return True
            await conn.execute(
                peers.update()
                .where(where)
                .values(url=url, secret=sealed_secret, updated_at=to_us(now))
            )
            return False

    async def peer(self, tenant_id: TenantId, site: str) -> PeerRecord | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    peers.select().where((peers.c.tenant_id == tenant_id) & (peers.c.site == site))
                )
            ).first()
        return None if row is None else _peer(row)

    async def peers(self, tenant_id: TenantId) -> list[PeerRecord]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                peers.select().where(peers.c.tenant_id == tenant_id).order_by(peers.c.site)
            )
            return [_peer(row) for row in rows]

    async def mirrored(self, tenant_id: TenantId, site: str, digest: str, now: datetime) -> None:
        """The peer acknowledged the tenant's keys and buses as they were at `digest`."""
        async with self._engine.begin() as conn:
            await conn.execute(
                peers.update()
                .where((peers.c.tenant_id == tenant_id) & (peers.c.site == site))
                .values(control_digest=digest, control_mirrored_at=to_us(now))
            )

    async def settle(
        self, tenant_id: TenantId, site: str, state: str, detail: str | None = None
    ) -> None:
        """Record how the tenant of the same name on this site and `site` was settled."""
        async with self._announcing(tenant_id) as conn:
            await conn.execute(
                peers.update()
                .where((peers.c.tenant_id == tenant_id) & (peers.c.site == site))
                .values(tenant_state=state, tenant_detail=detail)
            )

    async def paired_tenants(self) -> list[TenantId]:
        """Every tenant with at least one peer (what the replicator works for)."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(sa.select(peers.c.tenant_id).distinct())
            return [TenantId(row.tenant_id) for row in rows]

    async def delete_peer(self, tenant_id: TenantId, site: str) -> bool:
        async with self._announcing(tenant_id) as conn:
            done = await conn.execute(
                peers.delete().where((peers.c.tenant_id == tenant_id) & (peers.c.site == site))
            )
            await conn.execute(
                cursors.delete().where(
                    (cursors.c.tenant_id == tenant_id) & (cursors.c.site == site)
                )
            )
        return bool(done.rowcount)

    async def cursors(self, tenant_id: TenantId, site: str) -> dict[str, Cursor]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                cursors.select().where(
                    (cursors.c.tenant_id == tenant_id) & (cursors.c.site == site)
                )
            )
            return {row.bus: Cursor(row.bus, row.position, row.recorded_us) for row in rows}

    async def advance(self, tenant_id: TenantId, site: str, cursor: Cursor, now: datetime) -> None:
        """Record that the peer acknowledged the bus up to `cursor` (never moves back)."""
        async with self._engine.begin() as conn:
            await _forward(
                conn,
                cursors,
                {"tenant_id": tenant_id, "site": site, "bus": cursor.bus},
                "position",
                cursor.position,
                recorded_us=cursor.recorded_us,
                updated_at=to_us(now),
            )

    async def standing(self) -> Standing:
        """Every endpoint, routed position and cursor, read together (one transaction: each
        takes the control plane's write lock, `BEGIN IMMEDIATE`, even to read)."""
        query = endpoints.select().order_by(endpoints.c.tenant_id, endpoints.c.name)
        async with self._engine.connect() as conn:
            found = [_endpoint(row) for row in await conn.execute(query)]
            return Standing(found, await _all_routed(conn), await _all_cursors(conn))

    async def put_routed(
        self, tenant_id: TenantId, site: str, through: dict[str, int], now: datetime
    ) -> None:
        """Record how far `site` has routed each bus (microseconds; never moves back)."""
        async with self._engine.begin() as conn:
            for bus, us in through.items():
                key = {"tenant_id": tenant_id, "site": site, "bus": bus}
                await _forward(conn, routed, key, "through_us", us, updated_at=to_us(now))

    async def routed_by(self, tenant_id: TenantId, site: str) -> dict[str, int]:
        """How far `site` has delivered each of the tenant's buses, as it told this site."""
        where = sa.and_(routed.c.tenant_id == tenant_id, routed.c.site == site)
        async with self._engine.connect() as conn:
            rows = await conn.execute(sa.select(routed.c.bus, routed.c.through_us).where(where))
            return {r.bus: int(r.through_us) for r in rows}

    async def put_endpoint(
        self, tenant_id: TenantId, name: str, spec: EndpointInput, now: datetime
    ) -> tuple[EndpointRecord, bool]:
        """Store an endpoint's spec (a new one healthy on its primary; a changed one keeps its
        state unless its active site is no longer one of its two); it and whether it is new."""
        where = (endpoints.c.tenant_id == tenant_id) & (endpoints.c.name == name)
        async with self._announcing(tenant_id) as conn:
            row = (await conn.execute(endpoints.select().where(where))).first()
            if row is None:
                first = Transition(now, "healthy", spec.primary, "created")
                await conn.execute(
                    endpoints.insert().values(
                        tenant_id=tenant_id,
                        name=name,
                        spec=_encode(spec).decode(),
                        state="healthy",
                        active=spec.primary,
                        history=_encode([first]).decode(),
                        mirrored=False,
                        created_at=to_us(now),
                        updated_at=to_us(now),
                    )
                )
            else:
                values: dict[str, object] = {
                    "spec": _encode(spec).decode(),
                    "mirrored": False,
                    "updated_at": to_us(now),
                }
                if str(row.active) not in (spec.primary, spec.secondary):
                    values |= {"state": "healthy", "active": spec.primary}
                await conn.execute(endpoints.update().where(where).values(**values))
            found = (await conn.execute(endpoints.select().where(where))).one()
        return _endpoint(found), row is None

    async def endpoint(self, tenant_id: TenantId, name: str) -> EndpointRecord | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    endpoints.select().where(
                        (endpoints.c.tenant_id == tenant_id) & (endpoints.c.name == name)
                    )
                )
            ).first()
        return None if row is None else _endpoint(row)

    async def endpoints(self, tenant_id: TenantId | None = None) -> list[EndpointRecord]:
        """The tenant's endpoints (every tenant's without one), by tenant and name."""
        query = endpoints.select().order_by(endpoints.c.tenant_id, endpoints.c.name)
        if tenant_id is not None:
            query = query.where(endpoints.c.tenant_id == tenant_id)
        async with self._engine.connect() as conn:
            return [_endpoint(row) for row in await conn.execute(query)]

    async def delete_endpoint(self, tenant_id: TenantId, name: str) -> bool:
        async with self._announcing(tenant_id) as conn:
            done = await conn.execute(
                endpoints.delete().where(
                    (endpoints.c.tenant_id == tenant_id) & (endpoints.c.name == name)
                )
            )
        return bool(done.rowcount)

    async def set_state(
        self,
        tenant_id: TenantId,
        name: str,
        *,
        state: State,
        active: str,
        history: list[Transition],
        now: datetime,
    ) -> None:
        async with self._announcing(tenant_id) as conn:
            await conn.execute(
                endpoints.update()
                .where((endpoints.c.tenant_id == tenant_id) & (endpoints.c.name == name))
                .values(
                    state=state,
                    active=active,
                    history=_encode(history[-MAX_HISTORY:]).decode(),
                    updated_at=to_us(now),
                )
            )

    async def set_mirrored(self, tenant_id: TenantId, name: str, spec: EndpointInput) -> None:
        """The peer took `spec`: mirrored unless the spec changed meanwhile."""
        async with self._announcing(tenant_id) as conn:
            await conn.execute(
                endpoints.update()
                .where(
                    (endpoints.c.tenant_id == tenant_id)
                    & (endpoints.c.name == name)
                    & (endpoints.c.spec == _encode(spec).decode())
                )
                .values(mirrored=True)
            )


async def _all_cursors(conn: AsyncConnection) -> dict[tuple[TenantId, str, str], int]:
    rows = await conn.execute(
        sa.select(cursors.c.tenant_id, cursors.c.site, cursors.c.bus, cursors.c.position)
    )
    return {(TenantId(r.tenant_id), r.site, r.bus): int(r.position) for r in rows}


async def _all_routed(conn: AsyncConnection) -> dict[tuple[TenantId, str, str], int]:
    rows = await conn.execute(
        sa.select(routed.c.tenant_id, routed.c.site, routed.c.bus, routed.c.through_us)
    )
    return {(TenantId(r.tenant_id), r.site, r.bus): int(r.through_us) for r in rows}


async def _forward(
    conn: AsyncConnection,
    table: sa.Table,
    key: dict[str, str],
    column: str,
    value: int,
    **values: int,
) -> None:
    """Insert the row of `key`, or move its `column` to `value` (with `values`) if that is
    ahead of what is stored: a position that only moves forward."""
    where = sa.and_(*(table.c[name] == given for name, given in key.items()))
    found = (await conn.execute(sa.select(table.c[column]).where(where))).first()
    if found is None:
        await conn.execute(table.insert().values(**key, **{column: value}, **values))
    elif found[0] < value:
        await conn.execute(table.update().where(where).values(**{column: value}, **values))


def _endpoint(row: sa.Row[object]) -> EndpointRecord:
    return EndpointRecord(
        tenant_id=TenantId(str(row.tenant_id)),
        name=str(row.name),
        spec=_decode_spec(str(row.spec)),
        state=row.state,
        active=str(row.active),
        history=_decode_history(str(row.history)),
        mirrored=bool(row.mirrored),
        created_at=from_us(int(str(row.created_at))),
        updated_at=from_us(int(str(row.updated_at))),
    )


def _peer(row: sa.Row[object]) -> PeerRecord:
    return PeerRecord(
        site=str(row.site),
        url=str(row.url),
        sealed_secret=str(row.secret),
        created_at=from_us(int(str(row.created_at))),
        updated_at=from_us(int(str(row.updated_at))),
        control_digest=None if row.control_digest is None else str(row.control_digest),
        control_mirrored_at=(
            None if row.control_mirrored_at is None else from_us(int(str(row.control_mirrored_at)))
        ),
        tenant_state=str(row.tenant_state),
        tenant_detail=None if row.tenant_detail is None else str(row.tenant_detail),
    )

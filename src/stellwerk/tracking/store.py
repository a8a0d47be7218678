"""Where sources are kept: `SourceStore`, on SQLAlchemy Core over SQLite or PostgreSQL (the
control plane's database, lent through `stellwerk.capability.Database`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from stellwerk.clock import from_us, to_us
from stellwerk.refs import TenantId, TenantName, TenantRef
from stellwerk.tracking import writekeys
from stellwerk.tracking.model import ANY_ORIGIN, Binding, Source, SourceInput
from stellwerk.tracking.tables import source_origins, sources


class TooManySources(Exception):
    """The tenant has as many sources as it may."""


class ChangedConcurrently(Exception):
    """Another request created the same source at the same moment."""


def _source(row: Any) -> Source:
    return Source(
        name=row.name,
        kind=row.kind,
        bus=row.bus,
        write_key_id=row.key_id,
        allowed_origins=list(row.allowed_origins),
        without_consent=row.without_consent,
        full_ip=bool(row.full_ip),
        pseudonymise=list(row.pseudonymise),
        created_at=from_us(row.created_at),
        updated_at=from_us(row.updated_at),
        consent_purposes=list(row.consent_purposes or []),
        internal_hosts=list(row.internal_hosts or []),
        tcf_purposes=dict(row.tcf_purposes or {}),
    )


class SourceStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def put(
        self, tenant: TenantRef, name: str, body: SourceInput, now: datetime, *, limit: int
    ) -> tuple[Source, bool]:
        """Create or replace source `name`: the source and whether it was created. A new source
        gets a new write key (in the answer's `write_key`, this once); a replaced one keeps its
        key. Raises `TooManySources` when a new one would pass `limit`."""
        at = to_us(now)
        values = {
            "bus": body.bus,
            "kind": body.kind,
            "allowed_origins": body.allowed_origins,
            "without_consent": body.without_consent,
            "full_ip": body.full_ip,
            "pseudonymise": body.pseudonymise,
            "consent_purposes": body.consent_purposes,
            "internal_hosts": body.internal_hosts,
            "tcf_purposes": body.tcf_purposes,
            "updated_at": at,
        }
        key = (sources.c.tenant_id == tenant.id) & (sources.c.name == name)
        try:
            async with self._engine.begin() as conn:
                row = (await conn.execute(sa.select(sources).where(key))).first()
                new_key = None
                if row is None:
                    count = await conn.scalar(
                        sa.select(sa.func.count()).where(sources.c.tenant_id == tenant.id)
                    )
                    if (count or 0) >= limit:
                        raise TooManySources(f"a tenant has at most {limit} sources")
                    new_key = writekeys.generate()
                    await conn.execute(
                        sources.insert().values(
                            tenant_id=tenant.id,
                            name=name,
                            tenant_name=tenant.name,
                            key_id=new_key.key_id,
                            key_digest=new_key.digest,
                            created_at=at,
                            **values,
                        )
                    )
                else:
                    await conn.execute(sources.update().where(key).values(**values))
                mine = (source_origins.c.tenant_id == tenant.id) & (source_origins.c.source == name)
                await conn.execute(source_origins.delete().where(mine))
                if body.allowed_origins:
                    await conn.execute(
                        source_origins.insert(),
                        [
                            {"origin": o, "tenant_id": tenant.id, "source": name}
                            for o in body.allowed_origins
                        ],
                    )
                row = (await conn.execute(sa.select(sources).where(key))).one()
        except sa.exc.IntegrityError:
            raise ChangedConcurrently(f"source {name!r} was created by another request") from None
        source = _source(row)
        if new_key is not None:
            source.write_key = new_key.key
        return source, new_key is not None

    async def rotate(self, tenant_id: TenantId, name: str, now: datetime) -> Source | None:
        """Give source `name` a new write key (in `write_key`, this once): the old one names
        nothing from now on. None if there is no such source."""
        key = (sources.c.tenant_id == tenant_id) & (sources.c.name == name)
        new_key = writekeys.generate()
        async with self._engine.begin() as conn:
            changed = await conn.execute(
                sources.update()
                .where(key)
                .values(key_id=new_key.key_id, key_digest=new_key.digest, updated_at=to_us(now))
            )
            if changed.rowcount == 0:
                return None
            row = (await conn.execute(sa.select(sources).where(key))).one()
        source = _source(row)
        source.write_key = new_key.key
        return source

    async def get(self, tenant_id: TenantId, name: str) -> Source | None:
        key = (sources.c.tenant_id == tenant_id) & (sources.c.name == name)
        async with self._engine.connect() as conn:
            row = (await conn.execute(sa.select(sources).where(key))).first()
        return None if row is None else _source(row)

    async def all(self, tenant_id: TenantId) -> list[Source]:
        query = sa.select(sources).where(sources.c.tenant_id == tenant_id).order_by(sources.c.name)
        async with self._engine.connect() as conn:
            return [_source(row) for row in await conn.execute(query)]

    async def delete(self, tenant_id: TenantId, name: str) -> str | None:
        """Delete source `name`: the digest of its write key, or None if there was none."""
        key = (sources.c.tenant_id == tenant_id) & (sources.c.name == name)
        async with self._engine.begin() as conn:
            found = await conn.scalar(sa.select(sources.c.key_digest).where(key))
            if found is None:
                return None
            await conn.execute(sources.delete().where(key))
            await conn.execute(
                source_origins.delete().where(
                    (source_origins.c.tenant_id == tenant_id) & (source_origins.c.source == name)
                )
            )
        return str(found)

    async def binding(self, key_id: str) -> Binding | None:
        """The source whose write key has the public id `key_id`, for the collector."""
        async with self._engine.connect() as conn:
            row = (await conn.execute(sa.select(sources).where(sources.c.key_id == key_id))).first()
        if row is None:
            return None
        return Binding(
            tenant=TenantRef(TenantId(row.tenant_id), TenantName(row.tenant_name)),
            name=row.name,
            kind=row.kind,
            bus=row.bus,
            key_digest=row.key_digest,
            allowed_origins=frozenset(row.allowed_origins),
            without_consent=row.without_consent,
            full_ip=bool(row.full_ip),
            pseudonymise=tuple(row.pseudonymise),
            consent_purposes=tuple(row.consent_purposes or ()),
            internal_hosts=tuple(row.internal_hosts or ()),
            tcf_purposes=tuple(
                sorted((name, tuple(numbers)) for name, numbers in (row.tcf_purposes or {}).items())
            ),
        )

    async def origin_allowed(self, origin: str) -> bool:
        """Whether any source of any tenant allows `origin` (what a preflight can know)."""
        query = sa.select(source_origins.c.origin).where(
            source_origins.c.origin.in_([origin, ANY_ORIGIN])
        )
        async with self._engine.connect() as conn:
            return (await conn.execute(query.limit(1))).first() is not None

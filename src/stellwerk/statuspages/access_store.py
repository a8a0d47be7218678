"""Where logins of private and audience pages are kept: password hashes, audiences, access links.

Rows of audience "" are the page's own login (a private page); any other audience is one of an
audience page's. Only slow hashes of passwords are stored (`credentials.hash_password`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from stellwerk.clock import from_us, to_us
from stellwerk.refs import TenantId
from stellwerk.statuspages.tables import access, access_links

PAGE_LOGIN = ""  # the audience name of a private page's own login


class AccessRow(msgspec.Struct, frozen=True):
    """A login: the page's own (`audience` "") or an audience's, with its components."""

    audience: str
    components: list[str] | None
    password_hash: str | None
    epoch: int
    created_at: datetime
    updated_at: datetime


class LinkRow(msgspec.Struct, frozen=True):
    id: str
    audience: str
    label: str
    expires_at: datetime
    created_at: datetime
    revoked_at: datetime | None


_UNCHANGED: Any = object()


class AccessStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def put(
        self,
        tenant_id: TenantId,
        page: str,
        audience: str,
        now: datetime,
        *,
        components: list[str] | None = _UNCHANGED,
        password_hash: str | None = _UNCHANGED,
    ) -> tuple[AccessRow, bool]:
        """Create or change a login; what is not given stays. A new password (or its removal)
        moves the epoch on, which ends the sessions made before. The row, and whether it is new."""
        at = to_us(now)
        key = _key(tenant_id, page, audience)
        async with self._engine.begin() as conn:
            row = (await conn.execute(sa.select(access).where(key))).first()
            values: dict[str, Any] = {"updated_at": at}
            if components is not _UNCHANGED:
                values["components"] = components
            if password_hash is not _UNCHANGED:
                values["password_hash"] = password_hash
            if row is None:
                await conn.execute(
                    access.insert().values(
                        tenant_id=tenant_id,
                        page=page,
                        audience=audience,
                        created_at=at,
                        epoch=0,
                        **{"components": None, "password_hash": None, **values},
                    )
                )
            else:
                if password_hash is not _UNCHANGED:
                    values["epoch"] = access.c.epoch + 1
                await conn.execute(access.update().where(key).values(**values))
            stored = (await conn.execute(sa.select(access).where(key))).one()
        return _access(stored), row is None

    async def get(self, tenant_id: TenantId, page: str, audience: str) -> AccessRow | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(sa.select(access).where(_key(tenant_id, page, audience)))
            ).first()
        return _access(row) if row is not None else None

    async def audiences(self, tenant_id: TenantId, page: str) -> list[AccessRow]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                sa.select(access)
                .where(
                    (access.c.tenant_id == tenant_id)
                    & (access.c.page == page)
                    & (access.c.audience != PAGE_LOGIN)
                )
                .order_by(access.c.audience)
            )
            return [_access(row) for row in rows]

    async def delete(self, tenant_id: TenantId, page: str, audience: str) -> bool:
        """Delete a login with its links; whether it existed."""
        async with self._engine.begin() as conn:
            gone = await conn.execute(access.delete().where(_key(tenant_id, page, audience)))
            await conn.execute(
                access_links.delete().where(
                    (access_links.c.tenant_id == tenant_id)
                    & (access_links.c.page == page)
                    & (access_links.c.audience == audience)
                )
            )
        return bool(gone.rowcount)

    async def delete_page(self, tenant_id: TenantId, page: str) -> None:
        """Forget every login and link of a deleted page: a new page of its name starts closed."""
        async with self._engine.begin() as conn:
            for table in (access, access_links):
                await conn.execute(
                    table.delete().where((table.c.tenant_id == tenant_id) & (table.c.page == page))
                )

    # Links.

    async def add_link(self, tenant_id: TenantId, page: str, link: LinkRow) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                access_links.insert().values(
                    tenant_id=tenant_id,
                    page=page,
                    id=link.id,
                    audience=link.audience,
                    label=link.label,
                    expires_at=to_us(link.expires_at),
                    created_at=to_us(link.created_at),
                    revoked_at=None,
                )
            )

    async def link(self, tenant_id: TenantId, page: str, link_id: str) -> LinkRow | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(access_links).where(_link_key(tenant_id, page, link_id))
                )
            ).first()
        return _link(row) if row is not None else None

    async def links(self, tenant_id: TenantId, page: str) -> list[LinkRow]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                sa.select(access_links)
                .where((access_links.c.tenant_id == tenant_id) & (access_links.c.page == page))
                .order_by(access_links.c.created_at, access_links.c.id)
            )
            return [_link(row) for row in rows]

    async def revoke_link(
        self, tenant_id: TenantId, page: str, link_id: str, now: datetime
    ) -> bool:
        """Revoke a link (kept, so the list shows it); whether it exists."""
        async with self._engine.begin() as conn:
            key = _link_key(tenant_id, page, link_id)
            found = await conn.execute(sa.select(access_links.c.revoked_at).where(key))
            row = found.first()
            if row is None:
                return False
            if row.revoked_at is None:
                await conn.execute(access_links.update().where(key).values(revoked_at=to_us(now)))
        return True


def _key(tenant_id: TenantId, page: str, audience: str) -> Any:
    return (
        (access.c.tenant_id == tenant_id)
        & (access.c.page == page)
        & (access.c.audience == audience)
    )


def _link_key(tenant_id: TenantId, page: str, link_id: str) -> Any:
    return (
        (access_links.c.tenant_id == tenant_id)
        & (access_links.c.page == page)
        & (access_links.c.id == link_id)
    )


def _access(row: sa.Row[Any]) -> AccessRow:
    return AccessRow(
        audience=row.audience,
        components=list(row.components) if row.components is not None else None,
        password_hash=row.password_hash,
        epoch=row.epoch,
        created_at=from_us(row.created_at),
        updated_at=from_us(row.updated_at),
    )


def _link(row: sa.Row[Any]) -> LinkRow:
    return LinkRow(
        id=row.id,
        audience=row.audience,
        label=row.label,
        expires_at=from_us(row.expires_at),
        created_at=from_us(row.created_at),
        revoked_at=from_us(row.revoked_at) if row.revoked_at is not None else None,
    )

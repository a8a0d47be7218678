"""Where subscribers are kept, with the notifier's cursors and its outbox of mails.

A notice is written in the same transaction that moves the tenant's cursor past its event, so a
crash between reading an event and recording its mails loses none; the unique key (tenant,
subscriber, event) keeps a repeated read from queueing a mail twice.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from stellwerk.clock import from_us, to_us
from stellwerk.refs import TenantId
from stellwerk.statuspages.tables import notice_cursors, notices, subscribers

EMAIL = "email"
WEBHOOK = "webhook"


class SubscriberRow(msgspec.Struct, frozen=True):
    id: str
    page: str
    kind: str
    address: str
    components: list[str]
    audience: str
    rule: str | None
    origin: str
    created_at: datetime
    confirmed_at: datetime | None


class Notice(msgspec.Struct, frozen=True):
    """A mail to send: `event_id` names what it is about (an event, or a confirmation)."""

    page: str
    subscriber: str
    event_id: str
    subject: str
    body: str


class DueNotice(msgspec.Struct, frozen=True):
    seq: int
    tenant_id: TenantId
    notice: Notice
    attempts: int
    to: SubscriberRow | None  # None: unsubscribed since


class SubscriberStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def add(self, tenant_id: TenantId, row: SubscriberRow) -> SubscriberRow:
        """Add a subscriber; the one already there for its address, if any (nothing changes)."""
        async with self._engine.begin() as conn:
            found = await self._by_address(conn, tenant_id, row.page, row.kind, row.address)
            if found is not None:
                return found
            await conn.execute(
                subscribers.insert().values(
                    tenant_id=tenant_id,
                    page=row.page,
                    id=row.id,
                    kind=row.kind,
                    address=row.address,
                    components=row.components,
                    audience=row.audience,
                    rule=row.rule,
                    origin=row.origin,
                    created_at=to_us(row.created_at),
                    confirmed_at=to_us(row.confirmed_at) if row.confirmed_at else None,
                )
            )
        return row

    async def get(self, tenant_id: TenantId, page: str, id_: str) -> SubscriberRow | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(sa.select(subscribers).where(_key(tenant_id, page, id_)))
            ).first()
        return _subscriber(row) if row is not None else None

    async def all(self, tenant_id: TenantId, page: str) -> list[SubscriberRow]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                sa.select(subscribers)
                .where((subscribers.c.tenant_id == tenant_id) & (subscribers.c.page == page))
                .order_by(subscribers.c.created_at, subscribers.c.id)
            )
            return [_subscriber(row) for row in rows]

    async def confirm(self, tenant_id: TenantId, page: str, id_: str, now: datetime) -> bool:
        """Mark a subscriber confirmed (once; a second time changes nothing); whether it exists."""
        async with self._engine.begin() as conn:
            key = _key(tenant_id, page, id_)
            found = (await conn.execute(sa.select(subscribers.c.confirmed_at).where(key))).first()
            if found is None:
                return False
            if found.confirmed_at is None:
                await conn.execute(subscribers.update().where(key).values(confirmed_at=to_us(now)))
        return True

    async def delete(self, tenant_id: TenantId, page: str, id_: str) -> SubscriberRow | None:
        """Delete a subscriber with its unsent mails; what was deleted."""
        async with self._engine.begin() as conn:
            key = _key(tenant_id, page, id_)
            row = (await conn.execute(sa.select(subscribers).where(key))).first()
            if row is None:
                return None
            await conn.execute(subscribers.delete().where(key))
            await conn.execute(
                notices.delete().where(
                    (notices.c.tenant_id == tenant_id)
                    & (notices.c.subscriber == id_)
                    & notices.c.sent_at.is_(None)
                )
            )
        return _subscriber(row)

    async def confirmed_emails(self, tenant_id: TenantId, page: str) -> list[SubscriberRow]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                sa.select(subscribers).where(
                    (subscribers.c.tenant_id == tenant_id)
                    & (subscribers.c.page == page)
                    & (subscribers.c.kind == EMAIL)
                    & subscribers.c.confirmed_at.is_not(None)
                )
            )
            return [_subscriber(row) for row in rows]

    async def tenants_with_emails(self) -> set[TenantId]:
        """The tenants that have an email subscriber (the notifier follows their buses)."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                sa.select(subscribers.c.tenant_id).where(subscribers.c.kind == EMAIL).distinct()
            )
            return {TenantId(r) for r in rows.scalars()}

    # The notifier's cursors and outbox.

    async def start_cursor(self, tenant_id: TenantId, position: int) -> None:
        """Follow the tenant's bus from `position` on, unless a cursor is there already."""
        async with self._engine.begin() as conn:
            found = await conn.execute(
                sa.select(notice_cursors.c.position).where(notice_cursors.c.tenant_id == tenant_id)
            )
            if found.first() is None:
                await conn.execute(
                    notice_cursors.insert().values(tenant_id=tenant_id, position=position)
                )

    async def cursor(self, tenant_id: TenantId) -> int | None:
        async with self._engine.connect() as conn:
            found = await conn.execute(
                sa.select(notice_cursors.c.position).where(notice_cursors.c.tenant_id == tenant_id)
            )
            value = found.scalar()
        return int(value) if value is not None else None

    async def enqueue(
        self,
        tenant_id: TenantId,
        queued: list[Notice],
        now: datetime,
        *,
        cursor: int | None = None,
    ) -> int:
        """Queue mails (a repeated one is skipped) and, with them, move the cursor to `cursor`;
        how many were new."""
        at = to_us(now)
        added = 0
        async with self._engine.begin() as conn:
            for notice in queued:
                exists = await conn.execute(
                    sa.select(notices.c.seq).where(
                        (notices.c.tenant_id == tenant_id)
                        & (notices.c.subscriber == notice.subscriber)
                        & (notices.c.event_id == notice.event_id)
                    )
                )
                if exists.first() is not None:
                    continue
                await conn.execute(
                    notices.insert().values(
                        tenant_id=tenant_id,
                        page=notice.page,
                        subscriber=notice.subscriber,
                        event_id=notice.event_id,
                        subject=notice.subject[:300],
                        body=notice.body,
                        created_at=at,
                        attempts=0,
                        next_attempt_at=at,
                        sent_at=None,
                    )
                )
                added += 1
            if cursor is not None:
                await _move_cursor(conn, tenant_id, cursor)
        return added

    async def due(self, now: datetime, limit: int = 50) -> list[DueNotice]:
        """Unsent mails whose time has come, oldest first, each with its subscriber."""
        query = (
            sa.select(notices, subscribers)
            .select_from(
                notices.outerjoin(
                    subscribers,
                    (subscribers.c.tenant_id == notices.c.tenant_id)
                    & (subscribers.c.page == notices.c.page)
                    & (subscribers.c.id == notices.c.subscriber),
                )
            )
            .where(notices.c.sent_at.is_(None) & (notices.c.next_attempt_at <= to_us(now)))
            .order_by(notices.c.next_attempt_at, notices.c.seq)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        found = []
        for row in rows:
            to = None
            if row[subscribers.c.id] is not None:
                to = SubscriberRow(
                    id=row[subscribers.c.id],
                    page=row[subscribers.c.page],
                    kind=row[subscribers.c.kind],
                    address=row[subscribers.c.address],
                    components=list(row[subscribers.c.components]),
                    audience=row[subscribers.c.audience],
                    rule=row[subscribers.c.rule],
                    origin=row[subscribers.c.origin],
                    created_at=from_us(row[subscribers.c.created_at]),
                    confirmed_at=_maybe(row[subscribers.c.confirmed_at]),
                )
            notice = Notice(
                page=row[notices.c.page],
                subscriber=row[notices.c.subscriber],
                event_id=row[notices.c.event_id],
                subject=row[notices.c.subject],
                body=row[notices.c.body],
            )
            found.append(
                DueNotice(
                    seq=row[notices.c.seq],
                    tenant_id=TenantId(row[notices.c.tenant_id]),
                    notice=notice,
                    attempts=row[notices.c.attempts],
                    to=to,
                )
            )
        return found

    async def sent(self, seq: int, now: datetime) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                notices.update().where(notices.c.seq == seq).values(sent_at=to_us(now))
            )

    async def failed(
        self, seq: int, attempts: int, retry_at: datetime | None, now: datetime
    ) -> None:
        """Count a failed attempt: try again at `retry_at`, or give up (None: marked sent at
        -1, kept for the record)."""
        values: dict[str, Any] = {"attempts": attempts}
        if retry_at is None:
            values["sent_at"] = -1
        else:
            values["next_attempt_at"] = to_us(retry_at)
        async with self._engine.begin() as conn:
            await conn.execute(notices.update().where(notices.c.seq == seq).values(**values))

    async def sent_mails(self, tenant_id: TenantId, subscriber: str) -> list[str]:
        """The event ids of the mails sent to a subscriber (tests and support)."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                sa.select(notices.c.event_id)
                .where(
                    (notices.c.tenant_id == tenant_id)
                    & (notices.c.subscriber == subscriber)
                    & (notices.c.sent_at > 0)
                )
                .order_by(notices.c.seq)
            )
            return list(rows.scalars())

    async def delete_page(self, tenant_id: TenantId, page: str) -> list[SubscriberRow]:
        """Forget a deleted page's subscribers and their mails; those that were there."""
        async with self._engine.begin() as conn:
            rows = await conn.execute(
                sa.select(subscribers).where(
                    (subscribers.c.tenant_id == tenant_id) & (subscribers.c.page == page)
                )
            )
            gone = [_subscriber(row) for row in rows]
            for table in (subscribers, notices):
                await conn.execute(
                    table.delete().where((table.c.tenant_id == tenant_id) & (table.c.page == page))
                )
        return gone

    async def _by_address(
        self, conn: AsyncConnection, tenant_id: TenantId, page: str, kind: str, address: str
    ) -> SubscriberRow | None:
        row = (
            await conn.execute(
                sa.select(subscribers).where(
                    (subscribers.c.tenant_id == tenant_id)
                    & (subscribers.c.page == page)
                    & (subscribers.c.kind == kind)
                    & (subscribers.c.address == address)
                )
            )
        ).first()
        return _subscriber(row) if row is not None else None


async def _move_cursor(conn: AsyncConnection, tenant_id: TenantId, position: int) -> None:
    key = notice_cursors.c.tenant_id == tenant_id
    moved = await conn.execute(notice_cursors.update().where(key).values(position=position))
    if not moved.rowcount:
        await conn.execute(notice_cursors.insert().values(tenant_id=tenant_id, position=position))


def _key(tenant_id: TenantId, page: str, id_: str) -> Any:
    return (
        (subscribers.c.tenant_id == tenant_id)
        & (subscribers.c.page == page)
        & (subscribers.c.id == id_)
    )


def _maybe(us: int | None) -> datetime | None:
    return from_us(us) if us is not None else None


def _subscriber(row: sa.Row[Any]) -> SubscriberRow:
    return SubscriberRow(
        id=row.id,
        page=row.page,
        kind=row.kind,
        address=row.address,
        components=list(row.components),
        audience=row.audience,
        rule=row.rule,
        origin=row.origin,
        created_at=from_us(row.created_at),
        confirmed_at=_maybe(row.confirmed_at),
    )

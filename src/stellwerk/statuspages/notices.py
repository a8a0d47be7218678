"""The mails of email subscribers: what the notifier reads from each tenant's internal bus, and
how the outbox is sent over SMTP.

One process runs it (a singleton duty, lease `status-subscribers`). For every tenant with email
subscribers it follows the internal bus (`platform.tail`) for `status.incident.*` and
`status.maintenance.*` events from a durable cursor. Each event's mails go into the outbox in the
transaction that moves the cursor past it: a crash before loses nothing (the event is read
again), a crash after repeats nothing (the mails are there, keyed by subscriber and event). The
sender marks each mail sent after the server took it, so a kill in between repeats one mail,
never a storm; a stop lets the mail on the wire finish and be marked, so it repeats none. A
failed mail is tried again with backoff, 8 times over about two hours.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from typing import Any, Final, Protocol, TypeVar
from urllib.parse import unquote, urlsplit

import aiosmtplib
import msgspec
import structlog

from stellwerk.clock import utc_now
from stellwerk.refs import TenantId
from stellwerk.service import NotFound, Tail, Tenants
from stellwerk.statuspages.events import INTERNAL_BUS, SOURCE
from stellwerk.statuspages.service import StatusPages
from stellwerk.statuspages.subscriber_store import DueNotice, Notice, SubscriberRow, SubscriberStore

log = structlog.get_logger("stellwerk.statuspages")
T = TypeVar("T")

ACTOR: Final = "stellwerk:status-notices"
NOTICE_PATTERN: Final = msgspec.json.encode(
    {
        "source": [SOURCE],
        "type": [{"prefix": "status.incident."}, {"prefix": "status.maintenance."}],
    }
).decode()
MAX_ATTEMPTS: Final = 8
BATCH: Final = 50


class Recorded(Protocol):
    """What the notifier reads of an event that `Tail.follow` yields."""

    @property
    def id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def subject(self) -> str | None: ...
    @property
    def recorded_time(self) -> datetime: ...
    @property
    def body(self) -> bytes: ...


class Mailer:
    """Sends mails over SMTP: `smtp://` (STARTTLS when the server offers it) or `smtps://`."""

    def __init__(self, url: str, sender: str, *, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        self._tls = parts.scheme == "smtps"
        self._host = parts.hostname or "localhost"
        self._port = parts.port or (465 if self._tls else 25)
        self._user = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        self._timeout = timeout
        self.sender = sender
        self.domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"

    async def send(
        self,
        messages: list[EmailMessage],
        record: Callable[[int, Exception | None], Awaitable[None]],
    ) -> None:
        """Send over one connection, awaiting `record(index, None or why it failed)` after each
        mail. A stop (cancellation) while a mail is on the wire lets that transaction and its
        record finish first: cut off after the server took the mail, it would be sent again."""
        client = aiosmtplib.SMTP(
            hostname=self._host,
            port=self._port,
            use_tls=self._tls,
            start_tls=None if not self._tls else False,
            username=self._user,
            password=self._password,
            timeout=self._timeout,
        )
        try:
            try:
                await client.connect()
            except (aiosmtplib.SMTPException, OSError) as exc:
                _still_cancelled()
                for index in range(len(messages)):
                    await _finish(record(index, exc))
                return
            for index, message in enumerate(messages):
                transaction = asyncio.ensure_future(_transact(client, message))
                try:
                    error = await asyncio.shield(transaction)
                except asyncio.CancelledError:
                    await asyncio.wait([transaction])
                    await _finish(record(index, transaction.result()))
                    raise
                await _finish(record(index, error))
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await client.quit()
        finally:
            client.close()  # at once, also when cancelled: no waiting on a slow server


async def _transact(client: aiosmtplib.SMTP, message: EmailMessage) -> Exception | None:
    try:
        await client.send_message(message)
    except (aiosmtplib.SMTPException, OSError) as exc:
        return exc
    return None


def _still_cancelled() -> None:
    """aiosmtplib turns a cancellation in the middle of a command into an SMTP error; a mail
    that failed because its sender is being stopped must stop it, not count as a failure."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class Notifier:
    def __init__(
        self,
        store: SubscriberStore,
        tail: Tail,
        tenants: Tenants,
        pages: StatusPages,
        mailer: Mailer,
        unsubscribe_url: Callable[[SubscriberRow], str],
        *,
        clock: Callable[[], datetime] = utc_now,
        poll: float = 2.0,
    ) -> None:
        self._store = store
        self._tail = tail
        self._tenants = tenants
        self._pages = pages
        self._mailer = mailer
        self._unsubscribe_url = unsubscribe_url
        self._clock = clock
        self._poll = poll
        self._wakeup = asyncio.Event()
        self._look_again = asyncio.Event()

    def wake(self) -> None:
        """Mails were queued (a confirmation for a new address, say): send them, and look for
        tenants to follow, now rather than at the next poll."""
        self._wakeup.set()
        self._look_again.set()

    async def run(self) -> None:
        """Follow every tenant with email subscribers and send the outbox, until cancelled."""
        following: dict[TenantId, asyncio.Task[None]] = {}
        sender = asyncio.create_task(self._send_loop())
        try:
            while True:
                self._look_again.clear()
                for tenant_id in await _finish(self._store.tenants_with_emails()):
                    task = following.get(tenant_id)
                    if task is None or task.done():
                        following[tenant_id] = asyncio.create_task(self._follow(tenant_id))
                if sender.done():
                    sender.result()  # a fault in the sender is the duty's fault
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._poll):
                        await self._look_again.wait()
        finally:
            for task in [sender, *following.values()]:
                task.cancel()
            await asyncio.gather(sender, *following.values(), return_exceptions=True)

    async def _follow(self, tenant_id: TenantId) -> None:
        try:
            principal = await _finish(self._tenants.acting(tenant_id, ACTOR))
            cursor = await _finish(self._store.cursor(tenant_id))
            after, pattern = await _finish(
                self._tail.open(principal, INTERNAL_BUS, NOTICE_PATTERN, cursor)
            )
            async for event in self._tail.follow(
                principal, INTERNAL_BUS, after, pattern, keepalive=10.0
            ):
                if event is None:
                    continue
                queued = await self._notices(tenant_id, event)
                await _finish(
                    self._store.enqueue(tenant_id, queued, self._clock(), cursor=event.position)
                )
                if queued:
                    self._wakeup.set()
        except NotFound:
            return  # no internal bus (yet): looked at again at the next round
        except Exception:
            log.exception("status notices: following a tenant failed", tenant=tenant_id)

    async def _notices(self, tenant_id: TenantId, event: Recorded) -> list[Notice]:
        """The mails one status event makes: one per confirmed subscriber it concerns."""
        body: dict[str, Any] = msgspec.json.decode(event.body)
        data = body.get("data") or {}
        page_name = data.get("page") or event.subject
        incident = data.get("incident") or {}
        update = data.get("update") or {}
        if not isinstance(page_name, str) or not isinstance(incident, dict):
            return []
        try:
            page = await _finish(self._pages.page(tenant_id, page_name))
        except NotFound:
            return []
        touched = set(incident.get("components") or [])
        made = []
        for row in await _finish(self._store.confirmed_emails(tenant_id, page_name)):
            assert row.confirmed_at is not None
            if row.confirmed_at > event.recorded_time:
                continue  # it happened before they confirmed
            if row.components and touched and not touched & set(row.components):
                continue  # a page-wide incident (touching no component) concerns everyone
            made.append(
                Notice(
                    page=page_name,
                    subscriber=row.id,
                    event_id=event.id,
                    subject=_subject(page.title, event.type, incident),
                    body=_text(page.title, event.type, incident, update, row),
                )
            )
        return made

    async def _send_loop(self) -> None:
        while True:
            # Cleared before the query, not after it: a wake-up for mails queued while it runs
            # (which it may not see) then ends the wait below at once instead of a poll later.
            self._wakeup.clear()
            due = await _finish(self._store.due(self._clock(), BATCH))
            if due:
                await self._send(due)
                _still_cancelled()  # whatever aiosmtplib made of a cancellation on the way
                if len(due) == BATCH:
                    continue
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
            # comes as the wake-up does, and the duty would never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll):
                    await self._wakeup.wait()

    async def _send(self, due: list[DueNotice]) -> None:
        now = self._clock()
        sendable = []
        for item in due:
            if item.to is None:
                await _finish(
                    self._store.failed(item.seq, item.attempts, None, now)
                )  # unsubscribed
            else:
                sendable.append((item, self._message(item.notice, item.to)))
        if not sendable:
            return

        async def record(index: int, error: Exception | None) -> None:
            item = sendable[index][0]
            if error is None:
                await self._store.sent(item.seq, self._clock())
                return
            attempts = item.attempts + 1
            retry_at = (
                now + timedelta(seconds=min(3600, 30 * 2**attempts))
                if attempts < MAX_ATTEMPTS
                else None
            )
            log.warning(
                "status notice not sent",
                attempt=attempts,
                giving_up=retry_at is None,
                error=str(error),
            )
            await self._store.failed(item.seq, attempts, retry_at, now)

        await self._mailer.send([message for _, message in sendable], record)

    def _message(self, notice: Notice, to: SubscriberRow) -> EmailMessage:
        unsubscribe = self._unsubscribe_url(to)
        message = EmailMessage()
        message["From"] = self._mailer.sender
        message["To"] = to.address
        message["Subject"] = _one_line(notice.subject)
        message["Date"] = formatdate(usegmt=True)
        message["Message-ID"] = make_msgid(domain=self._mailer.domain)
        message["Auto-Submitted"] = "auto-generated"
        message["List-Unsubscribe"] = f"<{unsubscribe}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        message.set_content(f"{notice.body}\n--\nUnsubscribe: {unsubscribe}\n")
        return message


async def _finish(step: Awaitable[T]) -> T:
    """Await a store call to its end even when cancelled meanwhile, then stop: a query cancelled
    halfway leaves SQLAlchemy's aiosqlite adapter closing its connection forever, and the
    process with it (see `RoleSupervisor`). The singleton's body is stopped by cancelling."""
    task = asyncio.ensure_future(step)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        raise


_KINDS = {"incident": "Incident", "maintenance": "Maintenance"}


def _subject(title: str, type_: str, incident: dict[str, Any]) -> str:
    status = str(incident.get("status", "")).replace("_", " ").capitalize()
    return f"[{title}] {status}: {incident.get('name', '')}"


def _text(
    title: str,
    type_: str,
    incident: dict[str, Any],
    update: dict[str, Any],
    to: SubscriberRow,
) -> str:
    kind = _KINDS.get(type_.split(".")[1], "Incident")
    lines = [
        f"{title}: {kind.lower()} {incident.get('name', '')!s}",
        "",
        f"Status: {str(incident.get('status', '')).replace('_', ' ')}",
        f"Impact: {incident.get('impact', '')}",
    ]
    if incident.get("scheduled_for"):
        lines.append(f"Scheduled: {incident['scheduled_for']} to {incident.get('scheduled_until')}")
    if incident.get("components"):
        lines.append("Components: " + ", ".join(str(c) for c in incident["components"]))
    if update.get("body"):
        lines += ["", str(update["body"])]
    lines += ["", f"More: {to.origin}/status/{to.page}/incidents/{incident.get('id', '')}", ""]
    return "\n".join(lines)


def _one_line(text: str) -> str:
    return " ".join(text.split())

"""Subscribers of a status page: email addresses and webhooks, each for all of the page's
components or a chosen few.

- **Email** is double opt-in: a subscription queues a confirmation mail with a signed link, and
  only confirmed addresses get notices (`notices.py` sends both). Every mail carries a signed
  unsubscribe link, in its text and as `List-Unsubscribe` (one click, RFC 8058).
- **A webhook** is a rule on the tenant's internal bus whose pattern picks the page's `status.*`
  events (and the chosen components) and whose `http` target is the subscriber's URL, so its
  notices are Stellwerk's own deliveries: signed (Standard Webhooks), retried, dead-lettered,
  under the SSRF guard. The signing secret is shown once, in the answer that subscribed.

Readers subscribe to what they may see: an audience's subscriber hears only of its components.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Annotated, Final, Literal

import msgspec

from stellwerk.auth import Principal
from stellwerk.capability import Outgoing, UnsafeUrl
from stellwerk.clock import utc_now
from stellwerk.refs import TenantId
from stellwerk.rules import RuleInput, TargetSpec
from stellwerk.service import BusInput, InvalidRequest, NotFound, Platform, ValidationFailed
from stellwerk.statuspages.credentials import Signer
from stellwerk.statuspages.events import INTERNAL_BUS, SOURCE
from stellwerk.statuspages.model import Name, Page, Url
from stellwerk.statuspages.service import StatusPages
from stellwerk.statuspages.subscriber_store import (
    EMAIL,
    WEBHOOK,
    Notice,
    SubscriberRow,
    SubscriberStore,
)
from stellwerk.urls import PUBLIC_URL_SCHEMA

ACTOR: Final = "stellwerk:status-subscribers"
CONFIRM_WITHIN: Final = timedelta(days=7)
MAX_EMAIL: Final = 254
# An address a mail server takes: one @, no spaces or brackets, a dotted domain.
_LABEL: Final = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_EMAIL: Final = re.compile(rf"^[^@\s<>()\[\],;:\"\\]{{1,64}}@{_LABEL}(?:\.{_LABEL})+\Z")


# The URLs the SSRF guard takes, as the document shows them (`stellwerk.urls`).
WebhookUrl = Annotated[Url, msgspec.Meta(extra_json_schema=PUBLIC_URL_SCHEMA)]

# Exactly one of `email` and `webhook` (`subscribe` checks it; the document shows it).
ONE_OF_EMAIL_AND_WEBHOOK: Final = msgspec.Meta(
    extra_json_schema={
        "anyOf": [
            {
                "required": ["email"],
                "properties": {"email": {"type": "string"}, "webhook": {"type": "null"}},
            },
            {
                "required": ["webhook"],
                "properties": {"webhook": {"type": "string"}, "email": {"type": "null"}},
            },
        ]
    }
)


class SubscribeInput(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One of `email` and `webhook`; `components` to hear of only those (empty: all)."""

    email: Annotated[str, msgspec.Meta(max_length=MAX_EMAIL)] | None = None
    webhook: WebhookUrl | None = None
    components: list[Name] = msgspec.field(default_factory=list)


class Subscriber(msgspec.Struct, frozen=True):
    id: str
    page: str
    kind: Literal["email", "webhook"]
    address: str
    components: list[str]
    audience: str | None
    confirmed: bool
    created_at: datetime
    confirmed_at: datetime | None
    rule: str | None


class Subscribed(msgspec.Struct, frozen=True, omit_defaults=True):
    """The answer to a subscription. `status`: `confirmation_sent` (an email address, until it
    is confirmed; said the same whether the address was new or not) or `active` (a webhook).
    `signing_secret` verifies the webhook's deliveries; it is shown once."""

    kind: Literal["email", "webhook"]
    status: Literal["confirmation_sent", "active"]
    id: str | None = None
    signing_secret: str | None = None
    unsubscribe_url: str | None = None


class _Claim(msgspec.Struct, array_like=True, frozen=True):
    purpose: str  # "confirm" or "unsubscribe"
    page: str
    subscriber: str
    expires: int  # Unix seconds; 0: never


class Subscribers:
    def __init__(
        self,
        store: SubscriberStore,
        pages: StatusPages,
        platform: Platform,
        outgoing: Outgoing,
        key: Callable[[str], bytes],
        *,
        mail: bool,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.store = store
        self._pages = pages
        self._platform = platform
        self._outgoing = outgoing
        self._tokens = Signer(key("status-pages subscribers"))
        self.mail = mail
        self.clock = clock
        self.queued: Callable[[], None] = lambda: None  # the notifier's wake-up

    # Subscribing (a reader, or an admin for them).

    async def subscribe(
        self,
        tenant_id: TenantId,
        page: Page,
        body: SubscribeInput,
        origin: str,
        *,
        audience: str | None = None,
        visible: frozenset[str] | None = None,
    ) -> Subscribed:
        """Subscribe to `page` as a reader who sees `visible` of its components (None: all),
        its links pointing to `origin` (scheme and host of the site)."""
        if (body.email is None) == (body.webhook is None):
            raise ValidationFailed("give one of email and webhook", field="$.email")
        components = await self._components(tenant_id, page, body.components, visible)
        if body.email is not None:
            return await self._subscribe_email(
                tenant_id, page, body.email, components, audience or "", origin
            )
        assert body.webhook is not None
        return await self._subscribe_webhook(
            tenant_id, page, body.webhook, components, audience or "", origin
        )

    async def _components(
        self, tenant_id: TenantId, page: Page, chosen: list[str], visible: frozenset[str] | None
    ) -> list[str]:
        known = {c.id for c in await self._pages.store.list_components(tenant_id, page.name)}
        if visible is not None:
            known &= visible
        for index, component in enumerate(chosen):
            if component not in known:
                raise ValidationFailed(
                    f"component {component!r} is not on status page {page.name!r}",
                    field=f"$.components[{index}]",
                )
        if not chosen and visible is not None:
            return sorted(known)  # an audience hears of its own components only
        return sorted(set(chosen))

    async def _subscribe_email(
        self,
        tenant_id: TenantId,
        page: Page,
        email: str,
        components: list[str],
        audience: str,
        origin: str,
    ) -> Subscribed:
        address = email.strip()
        if not _EMAIL.match(address):
            raise ValidationFailed(f"{email!r} is not an email address", field="$.email")
        if not self.mail:
            raise ValidationFailed(
                "this server sends no mail (it was started without --smtp-url)", field="$.email"
            )
        now = self.clock()
        await self._start_following(tenant_id)
        row = await self.store.add(
            tenant_id,
            SubscriberRow(
                id=secrets.token_hex(8),
                page=page.name,
                kind=EMAIL,
                address=address.lower(),
                components=components,
                audience=audience,
                rule=None,
                origin=origin,
                created_at=now,
                confirmed_at=None,
            ),
        )
        if row.confirmed_at is None:
            # At most one confirmation mail per address every ten minutes, however often asked.
            ask = f"confirm:{int(now.timestamp()) // 600}"
            await self.store.enqueue(tenant_id, [self._confirmation(page, row, ask)], now)
            self.queued()
        return Subscribed(kind="email", status="confirmation_sent")

    async def _subscribe_webhook(
        self,
        tenant_id: TenantId,
        page: Page,
        url: str,
        components: list[str],
        audience: str,
        origin: str,
    ) -> Subscribed:
        try:
            self._outgoing.check_url(url)
        except UnsafeUrl as exc:
            raise ValidationFailed(f"webhook {url!r}: {exc}", field="$.webhook") from None
        existing = [s for s in await self.store.all(tenant_id, page.name) if s.address == url]
        if existing and existing[0].kind == WEBHOOK:
            return Subscribed(kind="webhook", status="active", id=existing[0].id)
        principal = await self._platform.tenants.acting(tenant_id, ACTOR)
        id_ = secrets.token_hex(8)
        rule = f"status-subscriber-{id_}"
        secret = "whsec_" + base64.b64encode(os.urandom(24)).decode("ascii")
        body = RuleInput(
            pattern=webhook_pattern(page.name, components),
            targets=[TargetSpec(id="webhook", type="http", url=url, secret=secret)],
            description=f"status page {page.name!r}: webhook subscriber {id_}",
        )
        try:
            await self._put_rule(principal, rule, body)
        except InvalidRequest as exc:
            raise ValidationFailed(f"webhook {url!r}: {exc.message}", field="$.webhook") from None
        now = self.clock()
        row = SubscriberRow(
            id=id_,
            page=page.name,
            kind=WEBHOOK,
            address=url,
            components=components,
            audience=audience,
            rule=rule,
            origin=origin,
            created_at=now,
            confirmed_at=now,
        )
        stored = await self.store.add(tenant_id, row)
        if stored.id != id_:  # the same URL, subscribed at the same moment
            await self._platform.rules.delete(principal, INTERNAL_BUS, rule)
            return Subscribed(kind="webhook", status="active", id=stored.id)
        return Subscribed(
            kind="webhook",
            status="active",
            id=id_,
            signing_secret=secret,
            unsubscribe_url=self.unsubscribe_url(row),
        )

    async def _put_rule(self, principal: Principal, rule: str, body: RuleInput) -> None:
        try:
            await self._platform.rules.put(principal, INTERNAL_BUS, rule, body)
        except NotFound:
            # No status event was ever published, so the internal bus is not there yet.
            await self._platform.buses.put(principal, INTERNAL_BUS, BusInput())
            await self._platform.rules.put(principal, INTERNAL_BUS, rule, body)

    async def _start_following(self, tenant_id: TenantId) -> None:
        """Make the notifier follow the tenant's bus from its end now, if it does not yet."""
        if await self.store.cursor(tenant_id) is not None:
            return
        principal = await self._platform.tenants.acting(tenant_id, ACTOR)
        try:
            position, _ = await self._platform.tail.open(principal, INTERNAL_BUS, None, None)
        except NotFound:
            position = 0
        await self.store.start_cursor(tenant_id, position)

    # Confirming and unsubscribing, by the signed links of the mails.

    async def confirm(self, tenant_id: TenantId, page: Page, token: str) -> SubscriberRow:
        row = await self._by_token(tenant_id, page, token, "confirm")
        await self.store.confirm(tenant_id, page.name, row.id, self.clock())
        return row

    async def unsubscribe(self, tenant_id: TenantId, page: Page, token: str) -> SubscriberRow:
        row = await self._by_token(tenant_id, page, token, "unsubscribe")
        await self._delete(tenant_id, row)
        return row

    async def _by_token(
        self, tenant_id: TenantId, page: Page, token: str, purpose: str
    ) -> SubscriberRow:
        payload = self._tokens.open(token)
        try:
            claim = msgspec.msgpack.decode(payload, type=_Claim) if payload else None
        except msgspec.DecodeError:
            claim = None
        if claim is None or claim.purpose != purpose or claim.page != page.name:
            raise InvalidRequest(
                "this link is not valid (altered, or for another page)", field="token"
            )
        if claim.expires and claim.expires <= self.clock().timestamp():
            raise InvalidRequest("this link has expired: subscribe again", field="token")
        row = await self.store.get(tenant_id, page.name, claim.subscriber)
        if row is None:
            raise NotFound("this subscription does not exist (any more)")
        return row

    def confirm_url(self, row: SubscriberRow) -> str:
        expires = int((self.clock() + CONFIRM_WITHIN).timestamp())
        token = self._token("confirm", row, expires)
        return f"{row.origin}/status/{row.page}/subscribe/confirm?token={token}"

    def unsubscribe_url(self, row: SubscriberRow) -> str:
        token = self._token("unsubscribe", row, 0)
        return f"{row.origin}/status/{row.page}/unsubscribe?token={token}"

    def _token(self, purpose: str, row: SubscriberRow, expires: int) -> str:
        return self._tokens.sign(msgspec.msgpack.encode(_Claim(purpose, row.page, row.id, expires)))

    def _confirmation(self, page: Page, row: SubscriberRow, event_id: str) -> Notice:
        return Notice(
            page=page.name,
            subscriber=row.id,
            event_id=event_id,
            subject=f"Confirm your subscription to {page.title}",
            body=(
                f"Someone, hopefully you, asked to get notices from {page.title} at this "
                "address.\n\nTo confirm, open this link within 7 days:\n\n"
                f"{self.confirm_url(row)}\n\n"
                "If it was not you, ignore this mail: you will get nothing more.\n"
            ),
        )

    # The admin's side.

    async def all(self, principal: Principal, page: str) -> list[Subscriber]:
        await self._pages.page(principal.tenant_id, page)
        return [_shown(r) for r in await self.store.all(principal.tenant_id, page)]

    async def get(self, principal: Principal, page: str, id_: str) -> Subscriber:
        await self._pages.page(principal.tenant_id, page)
        row = await self.store.get(principal.tenant_id, page, id_)
        if row is None:
            raise NotFound.of(f"subscriber {id_!r} of status page {page!r}")
        return _shown(row)

    async def delete(self, principal: Principal, page: str, id_: str) -> None:
        await self._pages.page(principal.tenant_id, page)
        row = await self.store.get(principal.tenant_id, page, id_)
        if row is None:
            raise NotFound.of(f"subscriber {id_!r} of status page {page!r}")
        await self._delete(principal.tenant_id, row)

    async def _delete(self, tenant_id: TenantId, row: SubscriberRow) -> None:
        if row.rule is not None:
            principal = await self._platform.tenants.acting(tenant_id, ACTOR)
            with contextlib.suppress(NotFound):  # an admin deleted the rule already
                await self._platform.rules.delete(principal, INTERNAL_BUS, row.rule)
        await self.store.delete(tenant_id, row.page, row.id)

    async def forget_page(self, principal: Principal, page: str) -> None:
        for row in await self.store.delete_page(principal.tenant_id, page):
            if row.rule is not None:
                with contextlib.suppress(NotFound):
                    await self._platform.rules.delete(principal, INTERNAL_BUS, row.rule)


def webhook_pattern(page: str, components: list[str]) -> dict[str, object]:
    """The page's status events (incidents, maintenance, components), and with `components`
    only those that touch one of them, or that touch none: a page-wide incident concerns
    everyone, as it does for email subscribers (`notices.py`)."""
    pattern: dict[str, object] = {
        "source": [SOURCE],
        "subject": [page],
        "type": [{"prefix": "status."}],
    }
    if components:
        pattern["$or"] = [
            {"data": {"incident": {"components": components}}},
            {"data": {"component": {"id": components}}},
            # `exists: false` holds for an empty list too (no leaf value), but also for a
            # component event, which has no incident: hence the narrowed types.
            {
                "type": [{"prefix": "status.incident."}, {"prefix": "status.maintenance."}],
                "data": {"incident": {"components": [{"exists": False}]}},
            },
        ]
    return pattern


def _shown(row: SubscriberRow) -> Subscriber:
    return Subscriber(
        id=row.id,
        page=row.page,
        kind="email" if row.kind == EMAIL else "webhook",
        address=row.address,
        components=row.components,
        audience=row.audience or None,
        confirmed=row.confirmed_at is not None,
        created_at=row.created_at,
        confirmed_at=row.confirmed_at,
        rule=row.rule,
    )

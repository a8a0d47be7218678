"""Private and audience pages: who may read them, and how a reader proves it.

A private page has a password of its own and signed access links an admin makes; an audience
page has audiences, each with its components, its password and its links. A reader who logs in
gets a session cookie, signed with a key derived for it (HMAC-SHA256), that names the tenant,
page, audience, the password's epoch (or the link it came by) and its expiry. Nothing of a
session is stored: a new password moves the epoch on and a revoked link is looked up, so both
end the sessions they made. Passwords are kept as scrypt hashes and compared in constant time
(`credentials.py`); attempts are rate-limited before any hashing (`attempts.py`), which also
caps the CPU a guesser can burn.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Annotated, Final, TypeVar

import msgspec

from stellwerk.auth import Principal
from stellwerk.clock import utc_now
from stellwerk.refs import TenantId
from stellwerk.service import NotFound, Unauthorized, ValidationFailed
from stellwerk.statuspages import events
from stellwerk.statuspages.access_store import PAGE_LOGIN, AccessRow, AccessStore, LinkRow
from stellwerk.statuspages.attempts import Attempts
from stellwerk.statuspages.credentials import Signer, hash_password, password_matches
from stellwerk.statuspages.events import Publisher
from stellwerk.statuspages.model import Name, Page, Visibility
from stellwerk.statuspages.service import StatusPages

T = TypeVar("T")

SESSION_LIFETIME: Final = timedelta(days=7)
DEFAULT_LINK_SECONDS: Final = 7 * 86_400
MAX_LINK_SECONDS: Final = 366 * 86_400
MAX_AUDIENCES: Final = 100
COOKIE_PREFIX: Final = "stellwerk_page_"

Password = Annotated[str, msgspec.Meta(min_length=8, max_length=200)]
Label = Annotated[str, msgspec.Meta(max_length=200)]


class AccessInput(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`PUT /v1/status-pages/{page}/access`: the private page's password (`null` removes it)."""

    password: Password | None


class AccessInfo(msgspec.Struct, frozen=True):
    page: str
    visibility: Visibility
    password_set: bool
    updated_at: datetime | None


class AudienceInput(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An audience: the components it sees, and its password (absent: unchanged; `null`:
    none, so only its access links admit it)."""

    components: list[Name]
    password: Password | msgspec.UnsetType | None = msgspec.UNSET


class Audience(msgspec.Struct, frozen=True):
    name: str
    page: str
    components: list[str]
    password_set: bool
    created_at: datetime
    updated_at: datetime


class LinkInput(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An access link: for the private page, or for one `audience` of an audience page."""

    expires_in_seconds: Annotated[int, msgspec.Meta(ge=60, le=MAX_LINK_SECONDS)] = (
        DEFAULT_LINK_SECONDS
    )
    audience: Name | None = None
    label: Label = ""


class AccessLink(msgspec.Struct, frozen=True, omit_defaults=True):
    """A link as listed; `url` only in the answer that made it (the token is not kept)."""

    id: str
    page: str
    audience: str | None
    label: str
    expires_at: datetime
    created_at: datetime
    revoked_at: datetime | None = None
    url: str | None = None


class Admitted(msgspec.Struct, frozen=True):
    """What a logged-in reader sees: the whole page (`audience` None) or an audience's
    components."""

    audience: str | None
    components: frozenset[str] | None


class LoginRefused(Unauthorized):
    """A wrong password, an unknown audience, or an expired, revoked or altered link."""

    default_code = "LoginRefused"


class _Session(msgspec.Struct, array_like=True, frozen=True):
    tenant: str
    page: str
    audience: str
    epoch: int
    link: str  # "" when the password made it
    expires: int  # Unix seconds


class _LinkClaim(msgspec.Struct, array_like=True, frozen=True):
    page: str
    link: str
    expires: int


class _FormClaim(msgspec.Struct, array_like=True, frozen=True):
    page: str
    nonce: str
    expires: int


def cookie_name(page: str) -> str:
    return COOKIE_PREFIX + page


class Access:
    """Logins of private and audience pages: the admin's use cases and the reader's."""

    def __init__(
        self,
        store: AccessStore,
        pages: StatusPages,
        publisher: Publisher,
        key: Callable[[str], bytes],
        attempts: Attempts,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.store = store
        self._pages = pages
        self._publisher = publisher
        self.clock = clock
        self._sessions = Signer(key("status-pages sessions"))
        self._links = Signer(key("status-pages access links"))
        self._forms = Signer(key("status-pages forms"))
        self.attempts = attempts

    # The admin's side.

    async def set_password(self, principal: Principal, page: str, body: AccessInput) -> AccessInfo:
        found = await self._pages.page(principal.tenant_id, page)
        hashed = await _hashed(body.password)
        row, _ = await self.store.put(
            principal.tenant_id, page, PAGE_LOGIN, self.clock(), password_hash=hashed
        )
        return _info(found, row)

    async def info(self, principal: Principal, page: str) -> AccessInfo:
        found = await self._pages.page(principal.tenant_id, page)
        return _info(found, await self.store.get(principal.tenant_id, page, PAGE_LOGIN))

    async def put_audience(
        self, principal: Principal, page: str, name: str, body: AudienceInput
    ) -> tuple[Audience, bool]:
        tenant_id = principal.tenant_id
        known = {c.id for c in await self._pages.list_components(principal, page)}
        for index, component in enumerate(body.components):
            if component not in known:
                raise ValidationFailed(
                    f"component {component!r} is not on status page {page!r}",
                    field=f"$.components[{index}]",
                )
        if (
            await self.store.get(tenant_id, page, name) is None
            and len(await self.store.audiences(tenant_id, page)) >= MAX_AUDIENCES
        ):
            raise ValidationFailed(f"a page has at most {MAX_AUDIENCES} audiences")
        now = self.clock()
        components = list(dict.fromkeys(body.components))
        if body.password is msgspec.UNSET:
            row, created = await self.store.put(tenant_id, page, name, now, components=components)
        else:
            row, created = await self.store.put(
                tenant_id,
                page,
                name,
                now,
                components=components,
                password_hash=await _hashed(body.password),
            )
        await self._publisher.publish(principal, [events.changed(page, "audience", name, now)])
        return _audience(page, row), created

    async def get_audience(self, principal: Principal, page: str, name: str) -> Audience:
        await self._pages.page(principal.tenant_id, page)
        row = await self.store.get(principal.tenant_id, page, name) if name else None
        if row is None:
            raise NotFound.of(f"audience {name!r} of status page {page!r}")
        return _audience(page, row)

    async def list_audiences(self, principal: Principal, page: str) -> list[Audience]:
        await self._pages.page(principal.tenant_id, page)
        return [_audience(page, r) for r in await self.store.audiences(principal.tenant_id, page)]

    async def delete_audience(self, principal: Principal, page: str, name: str) -> None:
        await self._pages.page(principal.tenant_id, page)
        if not await self.store.delete(principal.tenant_id, page, name):
            raise NotFound.of(f"audience {name!r} of status page {page!r}")
        await self._publisher.publish(
            principal, [events.changed(page, "audience", name, self.clock())]
        )

    async def create_link(
        self, principal: Principal, page: str, body: LinkInput, base_url: str
    ) -> AccessLink:
        """A new signed link; its URL (under `base_url`) is shown once and never kept."""
        await self._pages.page(principal.tenant_id, page)
        audience = body.audience or PAGE_LOGIN
        if audience and await self.store.get(principal.tenant_id, page, audience) is None:
            raise ValidationFailed(
                f"audience {audience!r} of status page {page!r} does not exist",
                field="$.audience",
            )
        now = self.clock()
        row = LinkRow(
            id=secrets.token_hex(8),
            audience=audience,
            label=body.label,
            expires_at=now + timedelta(seconds=body.expires_in_seconds),
            created_at=now,
            revoked_at=None,
        )
        await self.store.add_link(principal.tenant_id, page, row)
        claim = _LinkClaim(page, row.id, int(row.expires_at.timestamp()))
        token = self._links.sign(msgspec.msgpack.encode(claim))
        url = f"{base_url.rstrip('/')}/status/{page}/login?token={token}"
        return msgspec.structs.replace(_shown_link(page, row), url=url)

    async def list_links(self, principal: Principal, page: str) -> list[AccessLink]:
        await self._pages.page(principal.tenant_id, page)
        return [_shown_link(page, r) for r in await self.store.links(principal.tenant_id, page)]

    async def revoke_link(self, principal: Principal, page: str, link_id: str) -> None:
        await self._pages.page(principal.tenant_id, page)
        if not await self.store.revoke_link(principal.tenant_id, page, link_id, self.clock()):
            raise NotFound.of(f"access link {link_id!r} of status page {page!r}")

    # The reader's side.

    async def login(
        self, tenant_id: TenantId, page: Page, audience: str | None, password: str, client: str
    ) -> tuple[str, int]:
        """A session cookie's value and lifetime (seconds) for the right password."""
        await self.attempts.take(page.name, client)
        name = (audience or "").strip() if page.visibility is Visibility.AUDIENCE else PAGE_LOGIN
        if page.visibility is Visibility.AUDIENCE and not name:
            raise LoginRefused("this page needs an audience name and its password")
        row = await self.store.get(tenant_id, page.name, name)
        stored = row.password_hash if row is not None else None
        # Hash even when nothing is stored, so that timing does not tell audiences apart.
        matched = await asyncio.to_thread(password_matches, password, stored or _dummy_hash())
        if row is None or stored is None or not matched:
            raise LoginRefused("wrong password" if not name else "wrong audience or password")
        return self._session(tenant_id, page.name, name, row.epoch, "", self.clock())

    async def follow_link(self, tenant_id: TenantId, page: Page, token: str) -> tuple[str, int]:
        """A session cookie's value and lifetime for a valid link of this page."""
        payload = self._links.open(token)
        claim = _decode(payload, _LinkClaim)
        if claim is None or claim.page != page.name:
            raise LoginRefused("this access link is not valid (altered or for another page)")
        now = self.clock()
        row = await self.store.link(tenant_id, page.name, claim.link)
        if row is None or row.revoked_at is not None:
            raise LoginRefused("this access link was revoked")
        if row.expires_at <= now or claim.expires <= now.timestamp():
            raise LoginRefused("this access link has expired")
        if not self._fits(page, row.audience):
            raise LoginRefused("this access link is not for this page's visibility")
        return self._session(tenant_id, page.name, row.audience, 0, row.id, now, row.expires_at)

    async def admitted(
        self, tenant_id: TenantId, page: Page, cookie: str | None
    ) -> Admitted | None:
        """What the holder of session `cookie` may see of `page`; None: nothing (log in)."""
        if not cookie:
            return None
        claim = _decode(self._sessions.open(cookie), _Session)
        if claim is None or claim.tenant != tenant_id or claim.page != page.name:
            return None
        if claim.expires <= self.clock().timestamp() or not self._fits(page, claim.audience):
            return None
        row = await self.store.get(tenant_id, page.name, claim.audience)
        if claim.link:
            link = await self.store.link(tenant_id, page.name, claim.link)
            if link is None or link.revoked_at is not None or link.audience != claim.audience:
                return None
            if claim.audience and row is None:
                return None  # the audience was deleted
        elif row is None or row.password_hash is None or row.epoch != claim.epoch:
            return None
        if not claim.audience:
            return Admitted(None, None)
        assert row is not None
        return Admitted(claim.audience, frozenset(row.components or ()))

    def form_token(self, page: str) -> tuple[str, str]:
        """A form's CSRF token and the nonce for its cookie (double submit, signed)."""
        nonce = secrets.token_urlsafe(16)
        expires = int(self.clock().timestamp()) + 3600
        return self._forms.sign(msgspec.msgpack.encode(_FormClaim(page, nonce, expires))), nonce

    def form_token_valid(self, page: str, token: str, nonce: str | None) -> bool:
        claim = _decode(self._forms.open(token), _FormClaim)
        return (
            claim is not None
            and nonce is not None
            and claim.page == page
            and hmac.compare_digest(claim.nonce, nonce)
            and claim.expires > self.clock().timestamp()
        )

    async def forget_page(self, tenant_id: TenantId, page: str) -> None:
        await self.store.delete_page(tenant_id, page)

    def _session(
        self,
        tenant_id: TenantId,
        page: str,
        audience: str,
        epoch: int,
        link: str,
        now: datetime,
        until: datetime | None = None,
    ) -> tuple[str, int]:
        ends = now + SESSION_LIFETIME if until is None else min(until, now + SESSION_LIFETIME)
        expires = int(ends.timestamp())
        claim = _Session(tenant_id, page, audience, epoch, link, expires)
        return self._sessions.sign(msgspec.msgpack.encode(claim)), max(
            1, expires - int(now.timestamp())
        )

    @staticmethod
    def _fits(page: Page, audience: str) -> bool:
        """A private page admits its own login only, an audience page its audiences only."""
        if page.visibility is Visibility.PRIVATE:
            return audience == PAGE_LOGIN
        if page.visibility is Visibility.AUDIENCE:
            return audience != PAGE_LOGIN
        return True


@functools.cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_hex(16))


async def _hashed(password: str | None) -> str | None:
    return None if password is None else await asyncio.to_thread(hash_password, password)


def _decode(payload: bytes | None, type_: type[T]) -> T | None:
    if payload is None:
        return None
    try:
        return msgspec.msgpack.decode(payload, type=type_)
    except msgspec.DecodeError:
        return None


def _info(page: Page, row: AccessRow | None) -> AccessInfo:
    return AccessInfo(
        page=page.name,
        visibility=page.visibility,
        password_set=row is not None and row.password_hash is not None,
        updated_at=row.updated_at if row is not None else None,
    )


def _audience(page: str, row: AccessRow) -> Audience:
    return Audience(
        name=row.audience,
        page=page,
        components=row.components or [],
        password_set=row.password_hash is not None,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _shown_link(page: str, row: LinkRow) -> AccessLink:
    return AccessLink(
        id=row.id,
        page=page,
        audience=row.audience or None,
        label=row.label,
        expires_at=row.expires_at,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )

"""Peers of a tenant: pairing with another site (its URL and the secret both share), what each
has replicated, and the check of requests that claim to come from one."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Final
from urllib.parse import urlsplit

import structlog

from stellwerk.auth import Principal, Scope
from stellwerk.capability import Outgoing, UnsafeUrl
from stellwerk.clock import to_us, utc_now
from stellwerk.config import check_site
from stellwerk.refs import TenantId, TenantName, TenantRef
from stellwerk.secrets import DecryptionError, SecretBox
from stellwerk.service import InvalidRequest, NotFound, Platform, Unauthorized
from stellwerk.sites.mirror import snapshot
from stellwerk.sites.model import (
    BusReplication,
    ControlMirror,
    Peer,
    PeerInput,
    TenantStanding,
)
from stellwerk.sites.signing import BadSignature, claimed, verify
from stellwerk.sites.store import Cursor, PeerRecord, SitesStore

log = structlog.get_logger("stellwerk.sites")

# The lag shown per bus counts the events behind up to this many; beyond, it says so.
LAG_COUNT_LIMIT: Final = 10_000
ACTOR_PREFIX: Final = "site:"
# A settled pairing and the tenant it is for are read at most this often for signing and for
# checking a peer's signature (two queries and an AES-GCM open per peer request otherwise). A
# pairing changed or removed in another process is seen that late; one changed through this
# process at once.
RECORD_SECONDS: Final = 1.0
OPENED_MAX: Final = 1024  # opened secrets kept, by their sealed text


def site_name(text: str, field: str = "site") -> str:
    try:
        return check_site(text)
    except ValueError as exc:
        raise InvalidRequest(str(exc), field=field) from None


class Peers:
    def __init__(
        self,
        platform: Platform,
        store: SitesStore,
        box: SecretBox,
        outgoing: Outgoing,
        local_site: str,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._platform = platform
        self._store = store
        self._box = box
        self._outgoing = outgoing
        self.local_site = local_site
        self._clock = clock
        self._records: dict[tuple[TenantId, str], tuple[float, PeerRecord]] = {}
        self._tenants: dict[str, tuple[float, TenantRef]] = {}
        self._opened: dict[tuple[str, str], str] = {}

    async def put(self, principal: Principal, site: str, body: PeerInput) -> tuple[Peer, bool]:
        """Pair the caller's tenant with `site`, or change the pairing's URL and secret."""
        site = site_name(site)
        if site == self.local_site:
            raise InvalidRequest(
                f"{site!r} is this site's own name (--site); a peer is another site", field="site"
            )
        url = body.url.rstrip("/")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidRequest(f"{body.url!r} is not an http(s) URL", field="url")
        try:
            self._outgoing.check_url(url)
        except UnsafeUrl as exc:
            raise InvalidRequest(f"the peer's URL may not be used: {exc}", field="url") from None
        sealed = self._box.encrypt(body.secret, _associated(principal, site))
        created = await self._store.put_peer(principal.tenant_id, site, url, sealed, self._clock())
        self._records.pop((principal.tenant_id, site), None)
        return await self.get(principal, site), created

    async def get(self, principal: Principal, site: str) -> Peer:
        record = await self._store.peer(principal.tenant_id, site_name(site))
        if record is None:
            raise NotFound.of(f"peer {site!r}")
        return await self._view(principal, record)

    async def all(self, principal: Principal) -> list[Peer]:
        return [
            await self._view(principal, r) for r in await self._store.peers(principal.tenant_id)
        ]

    async def delete(self, principal: Principal, site: str) -> None:
        site = site_name(site)
        self._records.pop((principal.tenant_id, site), None)
        if not await self._store.delete_peer(principal.tenant_id, site):
            raise NotFound.of(f"peer {site!r}")

    async def record(self, principal: Principal, site: str) -> PeerRecord | None:
        """The tenant's pairing with `site` (a settled one as read within `RECORD_SECONDS`)."""
        key = (principal.tenant_id, site)
        now = time.monotonic()
        kept = self._records.get(key)
        if kept is not None and now - kept[0] < RECORD_SECONDS:
            return kept[1]
        record = await self._store.peer(principal.tenant_id, site)
        # Unsettled pairings are read each time: their requests wait for the settling.
        if record is None or record.tenant_state == "pending":
            self._records.pop(key, None)
        else:
            self._records[key] = (now, record)
        return record

    def secret(self, principal: Principal, record: PeerRecord) -> str:
        """The pair's shared secret, opened (for signing; never logged or shown)."""
        key = (record.sealed_secret, _associated(principal, record.site))
        opened = self._opened.get(key)
        if opened is None:
            opened = self._box.decrypt(record.sealed_secret, key[1])
            if len(self._opened) >= OPENED_MAX:
                self._opened.clear()
            self._opened[key] = opened
        return opened

    async def _acting_as(self, tenant: str, site: str) -> Principal:
        """The tenant named `tenant`, acting as the peer `site` (its id read within
        `RECORD_SECONDS`; only tenants that exist are kept, so a claimed name adds none)."""
        now = time.monotonic()
        kept = self._tenants.get(tenant)
        if kept is None or now - kept[0] >= RECORD_SECONDS:
            acting = await self._platform.tenants.acting_as(TenantName(tenant), ACTOR_PREFIX)
            kept = self._tenants[tenant] = (now, acting.ref)
        return Principal(kept[1], key_id=ACTOR_PREFIX + site, scope=Scope.ADMIN)

    async def authenticate(
        self, headers: Mapping[str, str], method: str, path: str, body: bytes
    ) -> tuple[Principal, PeerRecord]:
        """The tenant (acting as the peer) and the pairing a signed peer request comes by.

        A request that is not signed with the secret of a pairing of that tenant and site is
        refused with `Unauthorized` and logged, saying why but never with the secret."""
        site, tenant = "?", "?"
        try:
            site, tenant = claimed(headers)
            principal = await self._acting_as(tenant, site)
            record = await self.record(principal, site)
            if record is None:
                raise BadSignature(f"tenant {tenant!r} has no peer {site!r}")
            verify(
                self.secret(principal, record),
                headers,
                method=method,
                path=path,
                body=body,
                now=time.time(),
            )
        except (BadSignature, NotFound, DecryptionError) as exc:
            reason = (
                f"tenant {tenant!r} has no peer {site!r}" if isinstance(exc, NotFound) else str(exc)
            )
            log.warning("peer request refused", site=site, tenant=tenant, path=path, reason=reason)
            raise Unauthorized(f"peer request refused: {reason}") from None
        return principal, record

    async def _view(self, principal: Principal, record: PeerRecord) -> Peer:
        cursors = await self._store.cursors(principal.tenant_id, record.site)
        buses = [
            await self._replication(principal, bus.name, cursors.get(bus.name))
            for bus in await self._platform.buses.all(principal)
        ]
        _, digest = await snapshot(self._platform, principal, record)
        return Peer(
            site=record.site,
            url=record.url,
            created_at=record.created_at,
            updated_at=record.updated_at,
            local_site=self.local_site,
            mirrored=[b.bus for b in buses if b.lag_events == 0],
            pending=[b.bus for b in buses if b.lag_events > 0],
            buses=buses,
            keys_and_buses=ControlMirror(
                pending=digest != record.control_digest, mirrored_at=record.control_mirrored_at
            ),
            tenant=TenantStanding(record.tenant_state, record.tenant_detail),
        )

    async def lag(self, principal: Principal, site: str, bus: str) -> BusReplication:
        """How far the peer `site` is behind on `bus`."""
        cursors = await self._store.cursors(principal.tenant_id, site)
        return await self._replication(principal, bus, cursors.get(bus))

    async def _replication(
        self, principal: Principal, bus: str, cursor: Cursor | None
    ) -> BusReplication:
        tail = self._platform.tail
        replicated = cursor.position if cursor is not None else 0
        end = await tail.end(principal, bus)
        if end <= replicated:
            return BusReplication(bus, replicated, end, 0, 0.0)
        behind = await tail.page(principal, bus, replicated, LAG_COUNT_LIMIT)
        if not behind:
            return BusReplication(bus, replicated, end, 0, 0.0)
        age = (to_us(self._clock()) - to_us(behind[0].recorded_time)) / 1e6
        return BusReplication(
            bus,
            replicated,
            end,
            len(behind),
            max(0.0, age),
            lag_capped=len(behind) == LAG_COUNT_LIMIT,
        )


def _associated(principal: Principal, site: str) -> str:
    return peer_binding(principal.tenant_id, site)


def peer_binding(tenant_id: TenantId, site: str) -> str:
    """What a sealed secret is bound to: a copy moved to another tenant or peer will not open."""
    return f"sites-peer/{tenant_id}/{site}"

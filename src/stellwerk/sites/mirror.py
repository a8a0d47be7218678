"""Mirroring of a tenant's keys and buses to its peer sites, so that the peer can take over:
the same key authenticates there, and signs AWS SigV4 requests there, every bus exists there.

Keys go as their digests (bearer keys are checked against them) and, for the live keys that
can sign requests, their texts sealed under the pair's secret (`keycopies`): the peer checks
each text against its digest and seals it under its own secret key as it seals its own keys.

The first snapshot of a pairing settles the tenant both sites name alike (the issue's
interface): a tenant that a site's own first start created (`default`) and that holds no
events of its own gives way to the peer's tenant of that name: its keys are revoked, the
peer's keys and buses take their place. When both could, the younger one gives way. When
neither can (both hold events of their own), nothing is merged: the pairing shows the
conflict and the peer requests of that tenant get 409.

Rules go their own way: those of an endpoint's buses from its active site (`sites.rules`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime
from typing import Final, Literal

import msgspec
import structlog

from stellwerk.auth import Principal
from stellwerk.service import BusInput, Conflict, InvalidRequest, KeyDigest, Platform
from stellwerk.service import ValidationMode as BusValidation
from stellwerk.sites.keycopies import UnopenedKeys, open_texts, seal_texts
from stellwerk.sites.store import PeerRecord, SitesStore

log = structlog.get_logger("stellwerk.sites")

_encode: Final = msgspec.json.Encoder(order="sorted").encode
# The tenant a site's first start makes (`stellwerk serve` on an empty installation).
FIRST_TENANT: Final = "default"
ORIGIN_MARKER: Final = b'"originsite":'
SCAN_PAGE: Final = 500

# Where a pairing stands on the tenant, as stored and shown: `pending` until the first
# snapshot settles it; `joined` (this site's tenant stays, the peer's gave way or was one with
# it already); `gave-way` (this site's first tenant gave way to the peer's); `conflict`.
TenantState = Literal["pending", "joined", "gave-way", "conflict"]
# What a snapshot says of its sender's tenant: `yields` (pending and may give way), `holds`
# (pending, may not), or how it was settled.
Standing = Literal["yields", "holds", "joined", "gave-way"]


class MirroredBus(msgspec.Struct, frozen=True):
    name: str
    description: str = ""
    schema_validation: BusValidation = "off"


class ControlSnapshot(msgspec.Struct, forbid_unknown_fields=True):
    """What a site sends its peer of a tenant: its keys' digests and its buses, and where it
    stands on giving way (`standing`, with the tenant's creation time for the tie).

    `texts`: the live keys' texts that sign requests, by key id, sealed for the peer under the
    pair's secret (`keycopies.seal_texts`); never in the clear."""

    keys: list[KeyDigest]
    buses: list[MirroredBus]
    standing: Standing = "joined"
    created_at: datetime | None = None
    texts: str | None = None


class Mirrored(msgspec.Struct):
    """What the peer changed: keys added or revoked, buses created; and how it settled the
    tenant (`gave-way`: its own tenant gave way to the sender's)."""

    keys: int
    buses: int
    tenant: str = "joined"


_decode_snapshot: Final = msgspec.json.Decoder(ControlSnapshot).decode


async def may_give_way(platform: Platform, principal: Principal) -> bool:
    """Whether the tenant is a site's first tenant that holds no events of its own (replicas
    from a peer do not count)."""
    if principal.tenant != FIRST_TENANT:
        return False
    tail = platform.tail
    for bus in await platform.buses.all(principal):
        after = 0
        while True:
            page = await tail.page(principal, bus.name, after, SCAN_PAGE)
            if not page:
                break
            if any(ORIGIN_MARKER not in event.body for event in page):
                return False
            after = page[-1].position
    return True


async def created_at(platform: Platform, principal: Principal) -> datetime | None:
    for tenant in await platform.tenants.all():
        if tenant.id == principal.tenant_id:
            return tenant.created_at
    return None


# Seals the key texts (by id) for the peer: `keycopies.seal_texts` with the pair's secret.
Sealer = Callable[[dict[str, str]], str]


async def snapshot(
    platform: Platform, principal: Principal, record: PeerRecord, seal: Sealer | None = None
) -> tuple[bytes, str]:
    """The tenant's snapshot as sent to the peer of `record`, and its digest (sent again only
    when that changes). With `seal`, the body carries the signing keys' texts sealed by it;
    the digest covers which keys can sign, never the texts (a sealed value differs at every
    call). Without, the body is the digest's alone: what `Peers` shows as pending, and what
    the replicator compares before it opens any key."""
    keys, signing = await platform.keys.for_peer(principal.tenant_id)
    buses = [
        MirroredBus(b.name, b.description, b.schema_validation)
        for b in await platform.buses.all(principal)
    ]
    standing: Standing
    if record.tenant_state in ("joined", "gave-way"):
        standing = record.tenant_state  # type: ignore[assignment]
    else:
        standing = "yields" if await may_give_way(platform, principal) else "holds"
    taken = ControlSnapshot(
        keys=keys,
        buses=buses,
        standing=standing,
        created_at=await created_at(platform, principal),
    )
    digest = hashlib.sha256(
        _encode(taken) + b"\ntexts:" + ",".join(sorted(signing)).encode()
    ).hexdigest()
    # Also when this tenant yields: if both may give way, the peer may be the one that does,
    # and it then takes these keys (`_give_way`) from this very snapshot.
    if seal is not None and signing:
        texts = await platform.keys.texts(principal.tenant_id)
        if texts:
            taken.texts = seal(texts)
    return _encode(taken), digest


def sealer(secret: str, *, tenant: str, sender: str, receiver: str) -> Sealer:
    """What seals key texts from `sender` for `receiver` under the pair's `secret`."""

    def seal(texts: dict[str, str]) -> str:
        return seal_texts(secret, texts, tenant=tenant, sender=sender, receiver=receiver)

    return seal


def _younger(mine: tuple[datetime | None, str], theirs: tuple[datetime | None, str]) -> bool:
    """Whether this site's tenant is the younger one (the site name breaks a tie)."""
    if mine[0] is not None and theirs[0] is not None and mine[0] != theirs[0]:
        return mine[0] > theirs[0]
    return mine[1] > theirs[1]


async def take_snapshot(
    platform: Platform,
    store: SitesStore,
    principal: Principal,
    site: str,
    local_site: str,
    body: bytes,
    secret: str,
) -> Mirrored:
    """Take in a peer's snapshot: settle the tenant while the pairing is pending, then (once
    settled) its keys authenticate here too (revoked there, revoked here; those whose texts
    came sign requests here too) and its buses exist here (one that exists already is left as
    it is). `secret` is the pair's, which opens the key texts."""
    try:
        taken = _decode_snapshot(body)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise InvalidRequest(f"not a snapshot of keys and buses: {exc}") from None
    texts: dict[str, str] = {}
    if taken.texts is not None:
        try:
            texts = open_texts(
                secret, taken.texts, tenant=principal.tenant, sender=site, receiver=local_site
            )
        except UnopenedKeys as exc:
            log.warning("mirrored key texts refused", site=site, reason=str(exc))
            raise InvalidRequest(f"the snapshot's key texts: {exc}", field="$.texts") from None
    record = await store.peer(principal.tenant_id, site)
    state = record.tenant_state if record is not None else "joined"
    if state in ("pending", "conflict"):
        state = await _settle(platform, store, principal, site, local_site, taken)
        if state == "gave-way":
            return await _give_way(platform, principal, site, taken, texts)
    if taken.standing == "yields":
        return Mirrored(keys=0, buses=0, tenant=state)  # it gives way: its keys do not come
    return await _merge(platform, principal, taken, state, texts)


async def _settle(
    platform: Platform,
    store: SitesStore,
    principal: Principal,
    site: str,
    local_site: str,
    taken: ControlSnapshot,
) -> TenantState:
    tenant = principal.tenant
    mine = await may_give_way(platform, principal)
    if taken.standing == "gave-way":
        state: TenantState = "joined"
    elif taken.standing == "yields" and mine:
        ours = (await created_at(platform, principal), local_site)
        state = "gave-way" if _younger(ours, (taken.created_at, site)) else "joined"
    elif taken.standing == "yields":
        state = "joined"
    elif mine:
        state = "gave-way"
    else:
        refused = (
            f"tenant {tenant!r} holds events of its own on both sites {local_site!r} and "
            f"{site!r}: two tenants that share a name are not merged; unpair, or pair a site "
            f"whose tenant {tenant!r} is new and empty"
        )
        await store.settle(principal.tenant_id, site, "conflict", refused)
        log.warning("pairing refused: tenant conflict", site=site, tenant=tenant)
        raise Conflict(refused)
    detail = (
        f"this site's first tenant {tenant!r} gave way to site {site!r}'s: use its keys"
        if state == "gave-way"
        else None
    )
    await store.settle(principal.tenant_id, site, state, detail)
    if state == "gave-way":
        log.info("tenant gave way to the peer's", site=site, tenant=tenant)
    return state


async def _give_way(
    platform: Platform,
    principal: Principal,
    site: str,
    taken: ControlSnapshot,
    texts: dict[str, str],
) -> Mirrored:
    """Make this site's tenant the peer's: its own keys stop working, the peer's keys and
    buses (with the peer's settings) take their place."""
    theirs = {d.id for d in taken.keys}
    revoked = 0
    for key in await platform.keys.all(principal.tenant_id):
        if key.id not in theirs and key.revoked_at is None:
            await platform.keys.revoke(principal.tenant_id, key.id)
            revoked += 1
    keys = await platform.keys.adopt(principal.tenant_id, taken.keys, texts)
    buses = 0
    for bus in taken.buses:
        try:
            _, made = await platform.buses.put(
                principal, bus.name, BusInput(bus.description, bus.schema_validation)
            )
            buses += made
        except Conflict:
            pass  # the tenant's bus limit here: the next snapshot tries again
    return Mirrored(keys=keys + revoked, buses=buses, tenant="gave-way")


async def _merge(
    platform: Platform,
    principal: Principal,
    taken: ControlSnapshot,
    state: str,
    texts: dict[str, str],
) -> Mirrored:
    keys = await platform.keys.adopt(principal.tenant_id, taken.keys, texts)
    have = {b.name for b in await platform.buses.all(principal)}
    created = 0
    for bus in taken.buses:
        if bus.name in have:
            continue
        try:
            await platform.buses.put(
                principal, bus.name, BusInput(bus.description, bus.schema_validation)
            )
            created += 1
        except Conflict:
            pass  # made meanwhile, or the tenant's bus limit here: the next snapshot tries again
    return Mirrored(keys=keys, buses=created, tenant=state)

"""Mirroring of a tenant's keys (their digests, never the keys) and buses to its peer sites,
so that the peer can take over: the same key authenticates there, every bus exists there.

Rules go their own way: those of an endpoint's buses from its active site (`sites.rules`).
"""

from __future__ import annotations

import hashlib
from typing import Final

import msgspec

from stellwerk.auth import Principal
from stellwerk.service import BusInput, Conflict, InvalidRequest, KeyDigest, Platform
from stellwerk.service import ValidationMode as BusValidation

_encode: Final = msgspec.json.Encoder(order="sorted").encode


class MirroredBus(msgspec.Struct, frozen=True):
    name: str
    description: str = ""
    schema_validation: BusValidation = "off"


class ControlSnapshot(msgspec.Struct, forbid_unknown_fields=True):
    """What a site sends its peer of a tenant: its keys' digests and its buses."""

    keys: list[KeyDigest]
    buses: list[MirroredBus]


class Mirrored(msgspec.Struct):
    """What the peer changed: keys added or revoked, buses created."""

    keys: int
    buses: int


_decode_snapshot: Final = msgspec.json.Decoder(ControlSnapshot).decode


async def snapshot(platform: Platform, principal: Principal) -> tuple[bytes, str]:
    """The tenant's snapshot as sent, and its digest (sent again only when that changes)."""
    keys = await platform.keys.digests(principal.tenant_id)
    buses = [
        MirroredBus(b.name, b.description, b.schema_validation)
        for b in await platform.buses.all(principal)
    ]
    body = _encode(ControlSnapshot(keys=keys, buses=buses))
    return body, hashlib.sha256(body).hexdigest()


async def take_snapshot(platform: Platform, principal: Principal, body: bytes) -> Mirrored:
    """Take in a peer's snapshot: its keys authenticate here too (revoked there, revoked here),
    its buses exist here (one that exists already is left as it is)."""
    try:
        taken = _decode_snapshot(body)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise InvalidRequest(f"not a snapshot of keys and buses: {exc}") from None
    keys = await platform.keys.adopt(principal.tenant_id, taken.keys)
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
    return Mirrored(keys=keys, buses=created)

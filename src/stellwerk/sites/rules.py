"""Mirroring of the rules of an endpoint's buses from its active site to the other one, so that
the other site delivers the same way once it takes over (only the active site routes, so a
rule on both sites delivers once).

The active site is the authority: the other one makes its rules on those buses what the active
site sent (adds, replaces, deletes). Scheduled rules stay on the site they were made on (both
sites would tick). A rotation's previous secret is not sent (the peer signs with the current
one); a rule the peer cannot take (a connection it lacks, a limit) is left out there, named in
the answer and logged.
"""

from __future__ import annotations

import hashlib
from typing import Final

import msgspec
import structlog

from stellwerk.auth import Principal
from stellwerk.rules import Rule, RuleInput, rule_input
from stellwerk.service import Conflict, InvalidRequest, NotFound, Platform, ServiceError
from stellwerk.sites.store import SitesStore

log = structlog.get_logger("stellwerk.sites")

_encode: Final = msgspec.json.Encoder(order="sorted").encode


class MirroredRule(msgspec.Struct, frozen=True):
    name: str
    rule: RuleInput


class RuleSnapshot(msgspec.Struct, forbid_unknown_fields=True):
    """What the active site of an endpoint sends the other one: the rules of its buses."""

    buses: dict[str, list[MirroredRule]]


class RuleRefused(msgspec.Struct):
    bus: str
    rule: str
    reason: str


class RulesMirrored(msgspec.Struct):
    """What the peer changed, and what it could not take."""

    put: int
    deleted: int
    refused: list[RuleRefused]


_decode_snapshot: Final = msgspec.json.Decoder(RuleSnapshot).decode


def _input(rule: Rule) -> RuleInput:
    """The rule as sent: without a rotation's previous secret (the peer would refuse it)."""
    targets = [
        msgspec.structs.replace(t, previous_secret=None, previous_secret_expires_at=None)
        for t in rule.targets
    ]
    return rule_input(rule, targets)


async def _mirrorable(platform: Platform, principal: Principal, bus: str) -> dict[str, RuleInput]:
    try:
        rules = await platform.rules.all(principal, bus)
    except NotFound:
        return {}
    return {r.name: _input(r) for r in rules if r.schedule is None}


async def rule_snapshot(
    platform: Platform, principal: Principal, buses: list[str]
) -> tuple[bytes, str]:
    """The rules of `buses` as sent, and their digest (sent again only when it changes)."""
    snapshot = RuleSnapshot(
        buses={
            bus: [
                MirroredRule(name, rule)
                for name, rule in sorted((await _mirrorable(platform, principal, bus)).items())
            ]
            for bus in buses
        }
    )
    body = _encode(snapshot)
    return body, hashlib.sha256(body).hexdigest()


async def take_rules(
    platform: Platform,
    store: SitesStore,
    principal: Principal,
    origin: str,
    local: str,
    body: bytes,
) -> RulesMirrored:
    """Make this site's rules on the snapshot's buses those of the active site `origin`.

    Each bus must be a bus of an endpoint of both sites that this site is not active for (the
    active site's rules are the ones that count)."""
    try:
        snapshot = _decode_snapshot(body)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise InvalidRequest(f"not a snapshot of rules: {exc}") from None
    standing_by: set[str] = set()
    for record in await store.endpoints(principal.tenant_id):
        sites = {record.spec.primary, record.spec.secondary}
        if sites == {origin, local} and record.active == origin:
            standing_by.update(record.spec.buses)
    elsewhere = sorted(snapshot.buses.keys() - standing_by)
    if elsewhere:  # checked before any change: all of the snapshot or nothing
        raise Conflict(f"bus {elsewhere[0]!r} is in no endpoint that {origin!r} is active for here")
    put = deleted = 0
    refused: list[RuleRefused] = []
    for bus, rules in snapshot.buses.items():
        have = await _mirrorable(platform, principal, bus)
        for mirrored in rules:
            if mirrored.rule.schedule is not None:
                continue
            if mirrored.name in have and _encode(have[mirrored.name]) == _encode(mirrored.rule):
                continue
            try:
                await platform.rules.put(principal, bus, mirrored.name, mirrored.rule)
                put += 1
            except ServiceError as exc:
                refused.append(RuleRefused(bus, mirrored.name, str(exc)))
        sent = {m.name for m in rules}
        for name in have.keys() - sent:
            try:
                await platform.rules.delete(principal, bus, name)
                deleted += 1
            except NotFound:
                pass  # deleted meanwhile
    if refused:
        log.warning(
            "mirrored rules refused",
            site=origin,
            rules=[f"{r.bus}/{r.rule}: {r.reason}" for r in refused],
        )
    return RulesMirrored(put=put, deleted=deleted, refused=refused)

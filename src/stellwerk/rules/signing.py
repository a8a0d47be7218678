"""Signing secrets of HTTP targets across saves: kept unless replaced, rotated with a grace period.

A receiver holds the target's secret, so a secret that changes by accident breaks every delivery
from then on. Hence a save that leaves `secret` out keeps the stored one (a new target gets a
generated one), and a save that names a different secret replaces it at once, as asked.
Changing it without breaking receivers is a rotation: the new secret signs from now on, and the
old one, as `previous_secret`, signs beside it until `previous_secret_expires_at`; Standard
Webhooks allows several signatures in `webhook-signature`, so a receiver holding either secret
verifies every delivery of the grace period.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

import msgspec

from stellwerk.rules.model import InvalidRuleError, Rule, RuleInput, TargetSpec

DEFAULT_SECRET_GRACE: Final = timedelta(hours=24)
MAX_SECRET_GRACE: Final = timedelta(days=7)


def carry_secrets(body: RuleInput, stored: Rule | None, now: datetime) -> RuleInput:
    """`body` as it will be saved over `stored`: each HTTP target keeps its stored secret (and a
    rotation's previous secret, until it expires) unless the body names another secret.

    A target that had none keeps `secret` unset, for the caller to generate one. Raises
    `InvalidRuleError` when the body sets `previous_secret*` to anything but what is stored.
    """
    before = {t.id: t for t in stored.targets if t.type == "http"} if stored else {}
    targets = [
        _carried(index, target, before.get(target.id), now) if target.type == "http" else target
        for index, target in enumerate(body.targets)
    ]
    return msgspec.structs.replace(body, targets=targets)


def _carried(index: int, target: TargetSpec, old: TargetSpec | None, now: datetime) -> TargetSpec:
    sent = (target.previous_secret, target.previous_secret_expires_at)
    if sent != (None, None) and (
        old is None or sent != (old.previous_secret, old.previous_secret_expires_at)
    ):
        field = "previous_secret" if sent[0] is not None else "previous_secret_expires_at"
        raise InvalidRuleError(
            "previous_secret and previous_secret_expires_at are set by a rotation (POST "
            ".../targets/{target}/rotate-secret); leave them out or send them unchanged",
            f"targets[{index}].{field}",
        )
    if old is None or (target.secret is not None and target.secret != old.secret):
        # New, or a secret the user chose: in force at once, nothing of an earlier one.
        return msgspec.structs.replace(
            target, previous_secret=None, previous_secret_expires_at=None
        )
    return _unexpired(msgspec.structs.replace(target, secret=old.secret), old, now)


def _unexpired(target: TargetSpec, old: TargetSpec, now: datetime) -> TargetSpec:
    expires = old.previous_secret_expires_at
    if old.previous_secret is None or expires is None or expires <= now:
        return msgspec.structs.replace(
            target, previous_secret=None, previous_secret_expires_at=None
        )
    return msgspec.structs.replace(
        target, previous_secret=old.previous_secret, previous_secret_expires_at=expires
    )


def rotated_target(target: TargetSpec, secret: str, grace: timedelta, now: datetime) -> TargetSpec:
    """`target` with `secret` in force and its current secret signing beside it for `grace`
    (none: the current one stops at once). A previous secret still in its grace period is
    dropped: only the last two secrets sign."""
    if target.type != "http":
        raise InvalidRuleError(
            f"a {target.type} target has no signing secret; only http targets are signed",
            "target",
            "InvalidTarget",
        )
    if not timedelta(0) <= grace <= MAX_SECRET_GRACE:
        raise InvalidRuleError(
            f"grace_seconds must be 0..{int(MAX_SECRET_GRACE.total_seconds())}",
            "grace_seconds",
            "InvalidRequest",
        )
    if secret == target.secret:
        raise InvalidRuleError(
            "the new secret is the target's current secret", "secret", "InvalidRequest"
        )
    if not grace or target.secret is None:
        return msgspec.structs.replace(
            target, secret=secret, previous_secret=None, previous_secret_expires_at=None
        )
    return msgspec.structs.replace(
        target,
        secret=secret,
        previous_secret=target.secret,
        previous_secret_expires_at=now + grace,
    )


def rule_input(rule: Rule, targets: list[TargetSpec]) -> RuleInput:
    """A saved rule as the body that saves it again, with `targets` in place of its own."""
    return RuleInput(
        pattern=rule.pattern,
        targets=targets,
        state=rule.state,
        description=rule.description,
        view=rule.view,
        schedule=rule.schedule,
        sites=rule.sites,
    )

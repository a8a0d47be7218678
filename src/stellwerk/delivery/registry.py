"""Targets as the rest of Stellwerk sees them: checked when a rule is saved, built to deliver.

`prepare` does the save-time checks that need I/O or secrets (does the connection exist, is the
URL allowed, can the function be imported) and fills in what the user may omit (a signing
secret for HTTP targets).
"""

from __future__ import annotations

import base64
import secrets

import msgspec

from stellwerk.auth import Principal
from stellwerk.rules import InvalidRuleError, RuleInput, TargetSpec
from stellwerk.storage.control import ControlPlane


def generate_signing_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and 24 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


class TargetRegistry:
    def __init__(self, control: ControlPlane, *, allow_private_targets: bool) -> None:
        self._control = control
        self._allow_private = allow_private_targets

    async def prepare(self, principal: Principal, rule: RuleInput) -> RuleInput:
        targets = [
            await self._prepare_target(principal, index, t) for index, t in enumerate(rule.targets)
        ]
        return msgspec.structs.replace(rule, targets=targets)

    async def _prepare_target(
        self, principal: Principal, index: int, target: TargetSpec
    ) -> TargetSpec:
        where = f"targets[{index}]"
        if target.type == "http":
            if target.secret is None:
                target = msgspec.structs.replace(target, secret=generate_signing_secret())
        elif target.type == "bus":
            assert target.bus is not None
            if await self._control.get_bus(principal.tenant_id, target.bus) is None:
                raise InvalidRuleError(f"bus {target.bus!r} does not exist", f"{where}.bus")
        return target

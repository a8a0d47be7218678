"""Targets as the rest of Stellwerk sees them: checked when a rule is saved.

`prepare` does the save-time checks that need I/O or process settings (is the URL allowed, does
the connection exist, can the function be imported, does the bus exist) and fills in what a user
may omit (the signing secret of an HTTP target: the stored one, else a new one; see
`rules.signing`). `rotate_secret` gives a target a new secret with a grace period for the old.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import msgspec

from stellwerk.auth import Principal
from stellwerk.clock import utc_now
from stellwerk.delivery.kinds import TargetKinds
from stellwerk.delivery.targets import (
    check_target_url,
    generate_secret,
    parse_secret,
    resolve_function,
)
from stellwerk.rules import (
    BUILTIN_TARGET_TYPES,
    DEFAULT_SECRET_GRACE,
    InvalidRuleError,
    Rule,
    RuleInput,
    TargetConfigError,
    TargetSpec,
    carry_secrets,
    rotated_target,
    rule_input,
)
from stellwerk.storage.control import ConflictError, ControlPlane


class TargetRegistry:
    def __init__(
        self,
        control: ControlPlane,
        *,
        allow_private_targets: bool,
        function_modules: tuple[str, ...] = (),
        clock: Callable[[], datetime] = utc_now,
        kinds: TargetKinds | None = None,
    ) -> None:
        self._kinds = kinds or TargetKinds()
        self._control = control
        self._allow_private = allow_private_targets
        self._function_modules = function_modules
        self._clock = clock

    async def prepare(
        self, principal: Principal, bus: str, name: str, rule: RuleInput
    ) -> RuleInput:
        """`rule` ready to be saved as rule `name` of `bus`, over the rule stored there if any."""
        stored = await self._control.rules.get(principal.tenant_id, bus, name)
        rule = carry_secrets(rule, stored, self._clock())
        targets = [
            await self._prepare_target(principal, index, t) for index, t in enumerate(rule.targets)
        ]
        return msgspec.structs.replace(rule, targets=targets)

    async def rotate_secret(
        self,
        principal: Principal,
        bus: str,
        name: str,
        target_id: str,
        *,
        secret: str | None = None,
        grace: timedelta = DEFAULT_SECRET_GRACE,
    ) -> Rule | None:
        """Give the target a new signing secret (`secret`, or a generated one); its current one
        keeps signing beside it for `grace`. None: no such rule or target."""
        stored = await self._control.rules.get(principal.tenant_id, bus, name)
        if stored is None or all(t.id != target_id for t in stored.targets):
            return None
        if secret is not None:
            try:
                parse_secret(secret)
            except TargetConfigError as exc:
                raise InvalidRuleError(exc.reason, "secret", "InvalidTarget") from None
        now = self._clock()
        targets = [
            rotated_target(t, secret or generate_secret(), grace, now) if t.id == target_id else t
            for t in stored.targets
        ]
        try:
            # A limit of 0 rules makes the save an update only: a rule deleted meanwhile is
            # not brought back by its rotation.
            saved, _ = await self._control.rules.put(
                principal.tenant_id, bus, name, rule_input(stored, targets), max_rules=0
            )
        except ConflictError:
            return None
        return saved

    async def _prepare_target(
        self, principal: Principal, index: int, target: TargetSpec
    ) -> TargetSpec:
        where = f"targets[{index}]"
        try:
            if target.type == "http":
                assert target.url is not None
                check_target_url(target.url, self._allow_private)
                if target.secret is None:
                    target = msgspec.structs.replace(target, secret=generate_secret())
                else:
                    parse_secret(target.secret)
                if target.connection is not None:
                    found = await self._control.connections.get(
                        principal.tenant_id, target.connection
                    )
                    if found is None:
                        raise InvalidRuleError(
                            f"connection {target.connection!r} does not exist",
                            f"{where}.connection",
                        )
            elif target.type == "function":
                assert target.function is not None
                self._check_function_module(target.function, f"{where}.function")
                resolve_function(target.function)
            elif target.type == "bus":
                assert target.bus is not None
                if target.tenant is not None and target.tenant != principal.tenant:
                    # One message whether the tenant or bus exists or not: nothing leaks.
                    if not await self._control.grants.allowed(
                        target.tenant, target.bus, principal.tenant
                    ):
                        raise InvalidRuleError(
                            f"tenant {target.tenant!r} has not granted bus {target.bus!r} "
                            "to this tenant",
                            f"{where}.tenant",
                        )
                elif await self._control.get_bus(principal.tenant_id, target.bus) is None:
                    raise InvalidRuleError(f"bus {target.bus!r} does not exist", f"{where}.bus")
            elif target.type not in BUILTIN_TARGET_TYPES:
                kind = self._kinds.get(target.type)
                if kind is None:
                    known = ", ".join([*BUILTIN_TARGET_TYPES, *sorted(self._kinds.registered)])
                    raise InvalidRuleError(
                        f"type {target.type!r} is not a target type; use one of {known}",
                        f"$.{where}.type",
                        "ValidationFailed",
                    )
                target = await kind.check(principal, target, where)
        except TargetConfigError as exc:
            field = {"secret": "secret", "function": "function"}.get(exc.field, "url")
            raise InvalidRuleError(exc.reason, f"{where}.{field}", "InvalidTarget") from None
        return target

    def _check_function_module(self, spec: str, field: str) -> None:
        # Saving a function target imports its module: only modules the operator named.
        module = spec.partition(":")[0]
        allowed = any(module == m or module.startswith(m + ".") for m in self._function_modules)
        if not allowed:
            named = ", ".join(self._function_modules) or "none"
            raise InvalidRuleError(
                f"module {module!r} is not allowed for function targets "
                f"(--function-modules allows: {named})",
                field,
                "InvalidTarget",
            )

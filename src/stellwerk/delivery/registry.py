"""Targets as the rest of Stellwerk sees them: checked when a rule is saved.

`prepare` does the save-time checks that need I/O or process settings (is the URL allowed, does
the connection exist, can the function be imported, does the bus exist) and fills in what a user
may omit (the signing secret of an HTTP target).
"""

from __future__ import annotations

import msgspec

from stellwerk.auth import Principal
from stellwerk.delivery.targets import (
    check_target_url,
    generate_secret,
    parse_secret,
    resolve_function,
)
from stellwerk.rules import InvalidRuleError, RuleInput, TargetConfigError, TargetSpec
from stellwerk.storage.control import ControlPlane


class TargetRegistry:
    def __init__(
        self,
        control: ControlPlane,
        *,
        allow_private_targets: bool,
        function_modules: tuple[str, ...] = (),
    ) -> None:
        self._control = control
        self._allow_private = allow_private_targets
        self._function_modules = function_modules

    async def prepare(self, principal: Principal, rule: RuleInput) -> RuleInput:
        targets = [
            await self._prepare_target(principal, index, t) for index, t in enumerate(rule.targets)
        ]
        return msgspec.structs.replace(rule, targets=targets)

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

"""Rules of a bus. A rule is checked whole when it is saved (pattern, targets, transformers, URLs,
connections), so that nothing is found wrong when events flow. Signing secrets are shown to admin
keys only; a save keeps them, `rotate_secret` changes them with a grace period (`rules.signing`)."""

from __future__ import annotations

from datetime import timedelta

import msgspec
import structlog

from stellwerk.auth import Principal, Scope
from stellwerk.delivery import TargetRegistry
from stellwerk.refs import BusRef
from stellwerk.rules import InvalidRuleError, Rule, RuleInput, validate_rule
from stellwerk.seams import EventLog
from stellwerk.service.buses import Buses
from stellwerk.service.errors import Conflict, InvalidRequest, NotFound, ValidationFailed
from stellwerk.storage.control import ConflictError, ControlPlane

log = structlog.get_logger("stellwerk")


def _shown(rule: Rule, scope: Scope) -> Rule:
    if scope is Scope.ADMIN:
        return rule
    hidden = [msgspec.structs.replace(t, secret=None, previous_secret=None) for t in rule.targets]
    return msgspec.structs.replace(rule, targets=hidden)


class Rules:
    def __init__(
        self,
        control: ControlPlane,
        buses: Buses,
        targets: TargetRegistry,
        *,
        max_rules: int,
        event_log: EventLog | None = None,
    ) -> None:
        self._control = control
        self._buses = buses
        self._targets = targets
        self._max_rules = max_rules
        self._event_log = event_log

    async def put(
        self, principal: Principal, bus: str, name: str, body: RuleInput
    ) -> tuple[Rule, bool]:
        """Create or replace a rule; it and whether it was created. Routing uses it at once."""
        await self._buses.record(principal.tenant_id, bus)
        try:
            validate_rule(body)
            body = await self._targets.prepare(principal, bus, name, body)
        except InvalidRuleError as exc:
            # A value outside a field's choices is 422, as the body's own checks answer it.
            refusal = ValidationFailed if exc.error == "ValidationFailed" else InvalidRequest
            raise refusal(str(exc), code=exc.error, field=exc.field) from None
        log_end = await self._log_end(BusRef(principal.tenant, bus))
        try:
            return await self._control.rules.put(
                principal.tenant_id, bus, name, body, max_rules=self._max_rules, log_end=log_end
            )
        except ConflictError as exc:
            raise Conflict(str(exc), code="LimitExceeded") from None

    async def _log_end(self, bus: BusRef) -> int | None:
        """Where the bus's log ends now, read before the save: every event recorded after the
        save answers lies beyond it, and a new rule routes all of those (docs/routing.md)."""
        if self._event_log is None:
            return None
        try:
            return await self._event_log.last_position(bus)
        except Exception as exc:
            # Not known: the rule then also routes what a router passed over lazily before it.
            log.warning(
                "rule_saved_without_log_end", tenant=bus.tenant, bus=bus.bus, error=str(exc)
            )
            return None

    async def rotate_secret(
        self,
        principal: Principal,
        bus: str,
        name: str,
        target: str,
        *,
        secret: str | None,
        grace: timedelta,
    ) -> Rule:
        """Give an HTTP target a new signing secret; the old one signs too for `grace`."""
        try:
            rule = await self._targets.rotate_secret(
                principal, bus, name, target, secret=secret, grace=grace
            )
        except InvalidRuleError as exc:
            raise InvalidRequest(str(exc), code=exc.error, field=exc.field) from None
        if rule is None:
            raise NotFound.of(f"target {target!r} of rule {name!r} on bus {bus!r}")
        return rule

    async def get(self, principal: Principal, bus: str, name: str) -> Rule:
        rule = await self._control.rules.get(principal.tenant_id, bus, name)
        if rule is None:
            raise NotFound.of(f"rule {name!r} on bus {bus!r}")
        return _shown(rule, principal.scope)

    async def all(self, principal: Principal, bus: str) -> list[Rule]:
        await self._buses.record(principal.tenant_id, bus)
        rules = await self._control.rules.for_bus(principal.tenant_id, bus)
        return [_shown(r, principal.scope) for r in rules]

    async def delete(self, principal: Principal, bus: str, name: str) -> None:
        if not await self._control.rules.delete(principal.tenant_id, bus, name):
            raise NotFound.of(f"rule {name!r} on bus {bus!r}")

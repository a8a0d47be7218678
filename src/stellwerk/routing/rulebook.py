"""Every rule of every bus, in memory: rule sets for the router and targets for the worker.

The router and the worker ask many times a second and must not wait for the control plane, so
the rule book keeps a snapshot and swaps in a bus's new rules (or a tenant's, when a connection
changed) when the API saved a change, before the API answers. Targets are built once per rule
version and closed when they are replaced.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
import structlog

from stellwerk.delivery import Target, TargetBinding
from stellwerk.events.envelope import encoded_envelope
from stellwerk.patterns import Matcher
from stellwerk.refs import BusRef, TenantId, TenantName
from stellwerk.routing.router import ENVELOPE_CONTENT_TYPE, RouteTarget, RuleSet, build_delivery
from stellwerk.rules import Rule, TargetSpec, compile_transformer
from stellwerk.seams import NewDelivery, StoredEvent
from stellwerk.storage.control import ConnectionRecord, ControlPlane

log = structlog.get_logger("stellwerk.routing")

TargetFactory = Callable[[TenantName, str, TargetSpec, Mapping[str, ConnectionRecord]], Target]
"""`build(tenant, bus, spec, connections)`: the deliverable target of a saved target spec."""


@dataclass(frozen=True, slots=True)
class _Bus:
    rule_set: RuleSet
    bindings: Mapping[tuple[str, str], TargetBinding]  # (rule, target id)


_EMPTY = _Bus(RuleSet(Matcher()), {})


class RuleBook:
    def __init__(
        self,
        control: ControlPlane,
        build: TargetFactory,
        *,
        buses_changed: Callable[[], None] | None = None,
    ) -> None:
        self._control = control
        self._build = build
        self._reloading = asyncio.Lock()
        # By (tenant, bus) tuple: `binding` is looked up per delivery, and building a BusRef
        # per delivery to look it up is what the hot path must not do. `_refs` keeps each bus's
        # BusRef, made once as the bus comes, for `buses()` and the router.
        self._buses: dict[tuple[TenantName, str], _Bus] = {}
        self._refs: dict[tuple[TenantName, str], BusRef] = {}
        self._tenant_names: dict[TenantId, TenantName] = {}
        # Told when a bus comes or goes (the lease keeper's `wake`: its router takes it on now).
        self._buses_changed = buses_changed or (lambda: None)
        self._version = 0  # one more for every bus's rules read again

    async def load(self) -> None:
        """Read everything (at start)."""
        for tenant in await self._control.list_tenants():
            self._tenant_names[tenant.id] = tenant.name
            await self.reload(tenant.id, None)

    async def reload(self, tenant_id: TenantId, bus: str | None) -> None:
        """Take in a change: one bus's rules, or (`bus=None`) every bus of the tenant.

        One reload at a time: two changes in quick succession (a rule saved, then its secret
        rotated) reloaded at once could finish out of order, the older read replacing the newer,
        and the process kept signing with the old secret until the next change."""
        async with self._reloading:
            await self._reload(tenant_id, bus)

    async def reload_named(self, tenant: TenantName, bus: str) -> None:
        """`reload` one bus of the tenant named `tenant` (a worker that met a delivery by a
        rule this process has not heard of yet)."""
        tenant_id = next((i for i, n in self._tenant_names.items() if n == tenant), None)
        if tenant_id is None:
            for record in await self._control.list_tenants():
                self._tenant_names[record.id] = record.name
            tenant_id = next((i for i, n in self._tenant_names.items() if n == tenant), None)
            if tenant_id is None:
                return
        await self.reload(tenant_id, bus)

    async def _reload(self, tenant_id: TenantId, bus: str | None) -> None:
        name = self._tenant_names.get(tenant_id)
        if name is None:
            for tenant in await self._control.list_tenants():
                self._tenant_names[tenant.id] = tenant.name
            name = self._tenant_names.get(tenant_id)
            if name is None:
                return
        buses = [b.name for b in await self._control.list_buses(tenant_id)]
        if bus is not None:
            if bus not in buses:
                await self._replace((name, bus), None)
                return
            buses = [bus]
        else:
            for known in [k for k in self._buses if k[0] == name and k[1] not in buses]:
                await self._replace(known, None)
        connections = {c.name: c for c in await self._control.connections.for_tenant(tenant_id)}
        for each in buses:
            rules, routes_after = await self._control.rules.routed_rules(tenant_id, each)
            compiled = self._compile(name, each, rules, connections, routes_after)
            await self._replace((name, each), compiled)

    def _compile(
        self,
        tenant: TenantName,
        bus: str,
        rules: list[Rule],
        connections: Mapping[str, ConnectionRecord],
        routes_after: int,
    ) -> _Bus:
        matcher = Matcher()
        envelope = Matcher()
        everywhere = Matcher()  # the rules with `"sites": "all"`, again
        everywhere_envelope = Matcher()
        scheduled: set[str] = set()
        scheduled_envelope: set[str] = set()
        targets: dict[str, list[RouteTarget]] = {}
        bindings: dict[tuple[str, str], TargetBinding] = {}
        for rule in rules:
            if rule.state != "enabled":
                continue
            built: list[RouteTarget] = []
            for spec in rule.targets:
                try:
                    target = self._build(tenant, bus, spec, connections)
                except Exception as exc:
                    # Saved rules were checked; a target that cannot be built now (a removed
                    # connection, a function gone from the code) is logged and its deliveries
                    # end in the dead-letter queue as "no target".
                    log.error(
                        "target_unavailable",
                        tenant=tenant,
                        bus=bus,
                        rule=rule.name,
                        target=spec.id,
                        error=str(exc),
                    )
                    continue
                bindings[(rule.name, spec.id)] = TargetBinding(
                    target=target,
                    retry_policy=spec.retry_policy,
                    dead_letter=spec.dead_letter,
                    concurrency=spec.concurrency,
                )
                built.append(route_target(rule, spec))
            if rule.pattern is None:
                scheduled.add(rule.name)
                if rule.view == "eventbridge":
                    scheduled_envelope.add(rule.name)
            else:
                (envelope if rule.view == "eventbridge" else matcher).add(rule.name, rule.pattern)
                if rule.sites == "all":
                    (everywhere_envelope if rule.view == "eventbridge" else everywhere).add(
                        rule.name, rule.pattern
                    )
            targets[rule.name] = built
        rule_set = RuleSet(
            matcher,
            targets,
            envelope,
            frozenset(scheduled),
            frozenset(scheduled_envelope),
            everywhere=RuleSet(everywhere, targets, everywhere_envelope)
            if len(everywhere) or len(everywhere_envelope)
            else None,
            routes_after=routes_after,
        )
        return _Bus(rule_set, bindings)

    def version(self) -> int:
        """Moves on whenever a bus's rules were read again (a change, a resync): what keeps a
        list of rules from the control plane (the rule ticker's) reads it again."""
        return self._version

    async def _replace(self, key: tuple[TenantName, str], new: _Bus | None) -> None:
        self._version += 1
        old = self._buses.pop(key, None)
        if new is not None:
            self._buses[key] = new
            if key not in self._refs:
                self._refs[key] = BusRef(*key)
        else:
            self._refs.pop(key, None)
        if (old is None) != (new is None):
            self._buses_changed()
        if old is not None:
            for binding in old.bindings.values():
                await binding.target.close()

    def buses(self) -> list[BusRef]:
        return list(self._refs.values())

    def rule_set(self, bus: BusRef) -> RuleSet:
        return self._buses.get((bus.tenant, bus.bus), _EMPTY).rule_set

    def binding(
        self, tenant: TenantName, bus: str, rule: str, target_id: str
    ) -> TargetBinding | None:
        return self._buses.get((tenant, bus), _EMPTY).bindings.get((rule, target_id))

    async def close(self) -> None:
        for key in list(self._buses):
            await self._replace(key, None)


def route_target(rule: Rule, spec: TargetSpec) -> RouteTarget:
    """What the router needs of one target of a saved rule."""
    transformer = compile_transformer(spec.input_transformer) if spec.input_transformer else None
    return RouteTarget(
        spec.id,
        transformer=transformer,
        ordered=spec.ordered,
        content_type=ENVELOPE_CONTENT_TYPE
        if rule.view == "eventbridge" and transformer is None
        else None,
    )


def redelivery(event: StoredEvent, rule: Rule, spec: TargetSpec) -> NewDelivery | None:
    """The delivery of a stored event to one target of a rule, built as the router builds it
    (the rule's view, transformer and ordering as they are now), whether or not the rule's
    pattern matches the event: a redeliver sends what the operator asks for. None when the
    transformer fails on the event (logged, as when routing)."""
    target = route_target(rule, spec)
    body = event.body
    decoded: dict[str, Any] | None = None
    if rule.view == "eventbridge":
        body, decoded = encoded_envelope(body, event.tenant)
    elif target.transformer is not None or target.ordered:
        decoded = msgspec.json.decode(body)
    return build_delivery(event.tenant, event.bus, event, body, rule.name, target, decoded)

"""Target types that capabilities bring: `status` (status pages) beside the core's own.

A capability registers a `TargetKind` under its type name when it opens. Rules name the type
and put its settings in `parameters`; the kind checks them when a rule is saved (with the
saving principal, so it can look up the tenant's pages) and builds the target that delivers.

The rule book builds targets as it loads, before capabilities open; so a target of a kind not
registered yet is a `LateTarget`, which finds its kind at its first delivery. A type no
capability of this process brings is refused when saved, and a delivery to one (a capability
removed since) is retried, then dead-lettered, naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from stellwerk.auth import Principal
from stellwerk.delivery.model import Outcome, RetryLater, Target
from stellwerk.refs import BusRef
from stellwerk.rules import TargetSpec
from stellwerk.seams import Delivery


class TargetKind(Protocol):
    async def check(self, principal: Principal, spec: TargetSpec, where: str) -> TargetSpec:
        """`spec` ready to save (it may fill in defaults); raises `InvalidRuleError` naming
        the field (`where` is the target's place, `targets[0]`)."""
        ...

    def build(self, owner: BusRef, spec: TargetSpec) -> Target:
        """The target delivering for a rule of bus `owner`."""
        ...


class TargetKinds:
    """The target types capabilities registered in this process, by name."""

    def __init__(self) -> None:
        self._kinds: dict[str, TargetKind] = {}

    def register(self, name: str, kind: TargetKind) -> None:
        if name in self._kinds:
            raise ValueError(f"target type {name!r} is registered already")
        self._kinds[name] = kind

    def get(self, name: str) -> TargetKind | None:
        return self._kinds.get(name)

    @property
    def registered(self) -> Mapping[str, TargetKind]:
        return self._kinds


class LateTarget:
    """A target of a capability's type, built at its first delivery (see the module's text)."""

    def __init__(self, kinds: TargetKinds, owner: BusRef, spec: TargetSpec) -> None:
        self._kinds = kinds
        self._owner = owner
        self._spec = spec
        self._target: Target | None = None

    async def deliver(self, delivery: Delivery) -> Outcome:
        if self._target is None:
            kind = self._kinds.get(self._spec.type)
            if kind is None:
                return RetryLater(f"no capability of this process delivers to {self._spec.type!r}")
            self._target = kind.build(self._owner, self._spec)
        return await self._target.deliver(delivery)

    async def close(self) -> None:
        if self._target is not None:
            await self._target.close()

    def __repr__(self) -> str:
        return f"LateTarget({self._spec.type!r}, {self._owner})"

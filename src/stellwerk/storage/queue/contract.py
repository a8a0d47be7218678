"""The delivery queue's contract, checked once for every backend.

Backends subclass `CheckedQueue`. Its `route`, `route_replay`, `lease` and `dead_letters`
refuse the arguments the seam refuses (`ValueError`) before the backend's `_route`, ... sees
them; what needs the stored cursor is checked by the backend inside its write, with
`check_route_cursor` and `check_replay_cursor`, so that both backends refuse alike.
"""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Self

from stellwerk.refs import BusRef, TenantName
from stellwerk.seams import (
    DEFAULT_DEAD_LETTER_PAGE,
    MAX_DEAD_LETTER_PAGE,
    Attempt,
    CursorConflict,
    DeadLetter,
    DeliveryQueue,
    LeasedDelivery,
    NewDelivery,
    TargetKey,
)


class CheckedQueue(DeliveryQueue):
    """A `DeliveryQueue` whose arguments are checked before the backend's hooks run."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def route(self, bus: BusRef, position: int, deliveries: Sequence[NewDelivery]) -> None:
        tenant, name = bus.tenant, bus.bus
        for d in deliveries:
            if d.tenant != tenant or d.bus != name or d.position > position:
                raise ValueError(
                    f"delivery of {d.tenant}/{d.bus} at {d.position} does not belong in"
                    f" {bus} (up to {position})"
                )
        await self._route(bus, position, deliveries)

    async def route_replay(
        self,
        tenant: TenantName,
        replay: str,
        seq: int,
        events: int,
        deliveries: Sequence[NewDelivery],
        *,
        after: int,
    ) -> None:
        if seq <= after:
            raise ValueError(f"a replay batch ({after}, {seq}] holds nothing")
        for d in deliveries:
            if d.tenant != tenant:
                raise ValueError(f"a delivery of {d.tenant} does not belong in {tenant}")
        await self._route_replay(tenant, replay, seq, events, deliveries, after=after)

    async def lease(
        self,
        now: datetime,
        limit: int,
        lease_seconds: float,
        per_target_limits: Mapping[TargetKey, int] | None = None,
    ) -> list[LeasedDelivery]:
        if limit < 1:
            return []
        return await self._lease(now, limit, lease_seconds, per_target_limits)

    async def ack_many(self, delivery_ids: Sequence[int], attempts: Sequence[Attempt] = ()) -> None:
        """One `ack` each, concurrently; a backend that can write them together overrides it.

        Attempts are matched to acks by nothing but order; a backend keeping history overrides
        this and writes `attempts` with the acks."""
        await asyncio.gather(*(self.ack(delivery_id) for delivery_id in delivery_ids))

    async def dead_letters(
        self,
        bus: BusRef,
        *,
        rule: str | None = None,
        target_id: str | None = None,
        after: int = 0,
        limit: int = DEFAULT_DEAD_LETTER_PAGE,
    ) -> list[DeadLetter]:
        if not 1 <= limit <= MAX_DEAD_LETTER_PAGE:
            raise ValueError(f"limit must be 1..{MAX_DEAD_LETTER_PAGE}, not {limit}")
        return await self._dead_letters(bus, rule, target_id, after, limit)

    @abstractmethod
    async def _route(self, bus: BusRef, position: int, deliveries: Sequence[NewDelivery]) -> None:
        """`route` with deliveries that belong to the run; check the cursor, then write."""

    @abstractmethod
    async def _route_replay(
        self,
        tenant: TenantName,
        replay: str,
        seq: int,
        events: int,
        deliveries: Sequence[NewDelivery],
        *,
        after: int,
    ) -> None:
        """`route_replay` of a non-empty batch of the tenant; check the cursor, then write."""

    @abstractmethod
    async def _lease(
        self,
        now: datetime,
        limit: int,
        lease_seconds: float,
        per_target_limits: Mapping[TargetKey, int] | None,
    ) -> list[LeasedDelivery]:
        """`lease` of at least one delivery."""

    @abstractmethod
    async def _dead_letters(
        self,
        bus: BusRef,
        rule: str | None,
        target_id: str | None,
        after: int,
        limit: int,
    ) -> list[DeadLetter]:
        """`dead_letters` with a page size within bounds."""


def check_route_cursor(
    bus: BusRef, current: int, position: int, deliveries: Sequence[NewDelivery]
) -> None:
    """`CursorConflict` if another router got further than `current` allows for this run."""
    if position <= current:
        raise CursorConflict(f"{bus} is routed up to {current}; cannot route up to {position}")
    for d in deliveries:
        if d.position <= current:
            # Another router routed part of this batch meanwhile (a lease that moved).
            raise CursorConflict(
                f"{bus} is routed up to {current}, past the delivery at {d.position}"
            )


def check_replay_cursor(
    tenant: TenantName, replay: str, current: int, after: int, seq: int
) -> None:
    """`CursorConflict` unless the replay's cursor is still where this batch starts."""
    if current != after:
        raise CursorConflict(
            f"replay {tenant}/{replay} is at seq {current}, not {after}; cannot route"
            f" ({after}, {seq}]"
        )


def carries(needle: bytes, text: str) -> bool:
    """Whether an attempt's answer or error holds an erasure's value (its `needle`, the bytes
    every copy of it holds; b"" when none is known, and then no text is taken for it)."""
    return bool(needle) and needle in text.encode("utf-8", "surrogatepass")

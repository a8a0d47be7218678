"""The `bus` target: put the event on another bus, keeping its id.

The bus is the tenant's own, or another tenant's that granted it (`PUT /v1/buses/{bus}/grants/
{tenant}`). Whether the bus still exists and the grant still holds is asked before every
delivery (through a short cache): a revoked grant or a deleted bus dead-letters the delivery.

Because the event keeps its `id` and `source`, the target bus's idempotency window stores a
redelivered event once, and an event that comes back to a bus it already passed (A -> B -> A) is
a duplicate there, which ends the loop. For loops longer than the window a hop count travels in
the `stellwerkhops` extension; past `MAX_HOPS` the delivery gives up.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

import msgspec

from stellwerk.delivery.model import Delivered, GiveUp, Outcome, RetryLater
from stellwerk.events import REPLAY_NAME, EventError, encode_event, validate_event
from stellwerk.refs import BusRef, TenantName
from stellwerk.seams import Delivery, EventLog, LogClosed, LogOverloaded, NewEvent

MAX_HOPS: Final = 8
HOPS: Final = "stellwerkhops"


class BusTarget:
    def __init__(
        self,
        log: EventLog,
        tenant: TenantName,
        bus: str,
        appended: Callable[[BusRef], None],
        refusal: Callable[[], Awaitable[str | None]],
    ) -> None:
        self.tenant = tenant
        self.bus = bus
        self._ref = BusRef(tenant, bus)
        self._log = log
        self._appended = appended
        self._refusal = refusal

    async def deliver(self, delivery: Delivery) -> Outcome:
        refused = await self._refusal()
        if refused is not None:
            return GiveUp(refused)
        try:
            decoded = msgspec.json.decode(delivery.payload)
            event = validate_event(decoded)
        except (msgspec.DecodeError, EventError) as exc:
            return GiveUp(f"a bus target needs a CloudEvent, and the payload is not one: {exc}")
        hops = event.extensions.get(HOPS, 0)
        hops = hops + 1 if isinstance(hops, int) and not isinstance(hops, bool) else 1
        if hops > MAX_HOPS:
            return GiveUp(f"the event passed {MAX_HOPS} buses: a routing loop")
        extensions = {**event.extensions, HOPS: hops}
        # Validation drops the extensions Stellwerk owns; a replayed event keeps its mark on the
        # next bus, so that bus's archives leave it out as they leave out every replayed event.
        replay = decoded.get(REPLAY_NAME)
        if isinstance(replay, str):
            extensions[REPLAY_NAME] = replay
        event = msgspec.structs.replace(event, extensions=extensions)
        try:
            results = await self._log.append(
                [NewEvent.of(self.tenant, self.bus, event, encode_event(event))]
            )
        except (LogOverloaded, LogClosed) as exc:
            return RetryLater(f"bus {self.bus!r} cannot take events now: {exc}", retry_after=1.0)
        self._appended(self._ref)
        if results[0].duplicate:
            return Delivered(f"already on bus {self.bus!r}")
        return Delivered(f"put on bus {self.bus!r}")

    async def close(self) -> None:
        """Nothing to release: the log belongs to the process."""

"""A delivery is one event on its way to one target; an attempt ends in one of three outcomes.

The outcomes map onto the decisions a worker makes, like httpx's exception tree maps onto
network decisions: `Delivered` (done), `RetryLater` (back into the queue, with backoff, possibly
at a time the target asked for) and `GiveUp` (to the dead-letter queue, whatever the policy).
Delivery is at least once: a target may see an event again after a crash, and the event id
travels with every attempt so receivers can deduplicate.
"""

from __future__ import annotations

from typing import Literal, Protocol

import msgspec

from stellwerk.seams import Delivery

ContentType = Literal["application/cloudevents+json", "application/json", "text/plain"]


class Delivered(msgspec.Struct, frozen=True):
    """Done. `status` and `answer` (the start of the body) when the target answered over HTTP;
    the delivery history keeps them, as for the failures below."""

    detail: str = ""
    status: int | None = None
    answer: str = ""


class RetryLater(msgspec.Struct, frozen=True):
    """A failure worth retrying; `retry_after` (seconds) when the target said when to come back."""

    reason: str
    retry_after: float | None = None
    throttled: bool = False
    status: int | None = None
    answer: str = ""


class GiveUp(msgspec.Struct, frozen=True):
    """A failure no retry will fix (a 4xx other than 429, a refused address): dead-letter now."""

    reason: str
    status: int | None = None
    answer: str = ""


Outcome = Delivered | RetryLater | GiveUp


class Target(Protocol):
    """Where deliveries go. `deliver` never raises for a delivery problem: it returns an Outcome."""

    async def deliver(self, delivery: Delivery) -> Outcome: ...

    async def close(self) -> None: ...

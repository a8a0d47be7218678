"""A delivery is one event on its way to one target; an attempt ends in one of three outcomes.

The outcomes map onto the decisions a worker makes, like httpx's exception tree maps onto
network decisions: `Delivered` (done), `RetryLater` (back into the queue, with backoff, possibly
at a time the target asked for) and `GiveUp` (to the dead-letter queue, whatever the policy).
Delivery is at least once: a target may see an event again after a crash, and the event id
travels with every attempt so receivers can deduplicate.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, Literal, Protocol

import msgspec

MAX_RETRY_ATTEMPTS: Final = 185
MIN_EVENT_AGE_SECONDS: Final = 60
MAX_EVENT_AGE_SECONDS: Final = 86_400


class RetryPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """EventBridge's retry policy: retries after the first attempt, and the oldest event to try.

    `maximum_retry_attempts` is 0..185 (0: one attempt only); `maximum_event_age_seconds` is
    60..86,400, counted from the event's recorded time.
    """

    maximum_retry_attempts: int = MAX_RETRY_ATTEMPTS
    maximum_event_age_seconds: int = MAX_EVENT_AGE_SECONDS


ContentType = Literal["application/cloudevents+json", "application/json", "text/plain"]


class NewDelivery(msgspec.Struct, frozen=True):
    """What the router puts in the queue for one (event, rule, target)."""

    tenant: str
    bus: str
    rule: str
    target_id: str
    event_id: str
    event_source: str
    position: int  # the event's position in the bus's log
    recorded_time: datetime
    payload: bytes  # what the target receives: the event, or the input transformer's output
    content_type: str
    ordering_key: str | None = None  # set when the target asked for ordered delivery


class Delivery(msgspec.Struct, frozen=True):
    """A delivery as leased from the queue; `attempts` counts attempts already made."""

    id: int
    tenant: str
    bus: str
    rule: str
    target_id: str
    event_id: str
    event_source: str
    position: int
    recorded_time: datetime
    payload: bytes
    content_type: str
    attempts: int
    ordering_key: str | None = None
    last_error: str | None = None


class Delivered(msgspec.Struct, frozen=True):
    detail: str = ""


class RetryLater(msgspec.Struct, frozen=True):
    """A failure worth retrying; `retry_after` (seconds) when the target said when to come back."""

    reason: str
    retry_after: float | None = None
    throttled: bool = False


class GiveUp(msgspec.Struct, frozen=True):
    """A failure no retry will fix (a 4xx other than 429, a refused address): dead-letter now."""

    reason: str


Outcome = Delivered | RetryLater | GiveUp


class Target(Protocol):
    """Where deliveries go. `deliver` never raises for a delivery problem: it returns an Outcome."""

    async def deliver(self, delivery: Delivery) -> Outcome: ...

    async def close(self) -> None: ...

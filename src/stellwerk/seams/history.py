"""Delivery history: every attempt a worker made, written with the outcome it settled.

A worker hands each attempt to the queue together with the ack, retry or dead letter that it
ends in (`WorkQueue`), so recording history costs no write of its own; the API reads it back
per event and per target through `DeliveryHistory`. docs/delivery-history.md has the why.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, Literal, Protocol, runtime_checkable

import msgspec

from stellwerk.clock import from_us
from stellwerk.refs import BusRef, TenantName

AttemptOutcome = Literal["delivered", "retrying", "dead_lettered", "dropped"]
ATTEMPT_OUTCOMES: Final[tuple[AttemptOutcome, ...]] = (
    "delivered",
    "retrying",
    "dead_lettered",
    "dropped",
)
EXCERPT_BYTES: Final = 1024  # of what the target answered, kept with the attempt
DEFAULT_ATTEMPT_PAGE: Final = 100
MAX_ATTEMPT_PAGE: Final = 1000


class Attempt(msgspec.Struct, frozen=True, gc=False):
    """One attempt of one delivery: when it started, how long it took, how it ended.

    `attempt` counts from 1 (a redrive starts again at 1). `started_us` is the start in
    microseconds since the epoch, as the stores keep it (`started` is it as a datetime): a
    worker makes one of these per attempt and a store writes it, so neither converts a datetime.
    `status` is the HTTP status when the target is one that answers with one; `error` says why
    a failed attempt failed; `excerpt` is the start of the answer's body (at most
    `EXCERPT_BYTES`, secrets already redacted).

    Not tracked by the garbage collector (`gc=False`: it holds strings and numbers only, so it
    is never part of a cycle): one is made per attempt, and each wait for its ack batch made
    the collector run, and promote them, more often.
    """

    tenant: TenantName
    bus: str
    rule: str
    target_id: str
    event_id: str
    position: int
    attempt: int
    started_us: int
    duration_us: int
    outcome: AttemptOutcome
    status: int | None = None
    error: str | None = None
    excerpt: str = ""

    @property
    def started(self) -> datetime:
        return from_us(self.started_us)


class RecordedAttempt(msgspec.Struct, frozen=True):
    """An attempt as the history holds it; `id` orders attempts and pages through them."""

    id: int
    attempt: Attempt


@runtime_checkable
class DeliveryHistory(Protocol):
    """What the API reads of the history. Every read is scoped to one tenant's bus."""

    async def event_attempts(self, bus: BusRef, event_id: str) -> list[RecordedAttempt]:
        """Every recorded attempt of the event's deliveries on the bus, in the order made."""
        ...

    async def target_attempts(
        self,
        bus: BusRef,
        rule: str,
        target_id: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        outcome: AttemptOutcome | None = None,
        after: int = 0,
        limit: int = DEFAULT_ATTEMPT_PAGE,
    ) -> list[RecordedAttempt]:
        """Attempts of one target with ids above `after`, started in [`since`, `until`), and
        ended in `outcome` if given; in id order, at most `limit` (1..1000)."""
        ...

    async def trim_history(self, older_than: datetime) -> int:
        """Remove attempts started before `older_than` (some may stay until a later call);
        how many went. Retention calls it with the log's cut-off."""
        ...


def check_attempt_page(limit: int) -> None:
    if not 1 <= limit <= MAX_ATTEMPT_PAGE:
        raise ValueError(f"limit must be 1..{MAX_ATTEMPT_PAGE}, not {limit}")

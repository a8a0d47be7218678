"""Delivery rate and latency drawn from the delivery history, which every process shares.

A scale-out gateway delivers nothing, so its own metrics keep the delivery charts flat; the
history (recorded by whichever process delivered, in the queue's store) is seen alike by every
gateway. The charts read the attempts of the kept window (`rates.KEPT` samples of
`rates.SAMPLE_SECONDS`) target by target, through the history facade, and bucket them by start
time. Bounded: at most `MAX_READS` pages of attempts per drawing; past that the newest buckets
may undercount, and the page says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from stellwerk.auth import Principal
from stellwerk.service import MAX_ATTEMPT_PAGE, NotSupported, Platform

MAX_READS: Final = 50  # pages of attempts one drawing may read, over all targets


@dataclass(frozen=True, slots=True)
class Drawn:
    delivery: list[float]  # delivered attempts per second, per bucket, oldest first
    duration_ms: list[float]  # mean duration of the bucket's delivered attempts
    complete: bool  # False: MAX_READS was reached and some attempts were left unread


async def from_history(
    platform: Platform,
    principal: Principal,
    now: datetime,
    *,
    every: float,
    buckets: int,
) -> Drawn | None:
    """The tenant's delivery rate and attempt durations over the last `buckets` intervals of
    `every` seconds, from its delivery history; None where no history is kept."""
    since = now - timedelta(seconds=every * buckets)
    counts = [0] * buckets
    durations = [0.0] * buckets
    reads = 0
    complete = True
    try:
        for bus in await platform.buses.all(principal):
            for rule in await platform.rules.all(principal, bus.name):
                for target in rule.targets:
                    after = 0
                    while True:
                        if reads >= MAX_READS:
                            complete = False
                            break
                        reads += 1
                        page = await platform.history.attempts(
                            principal,
                            bus.name,
                            rule.name,
                            target.id,
                            since=since,
                            outcome="delivered",
                            after=after,
                            limit=MAX_ATTEMPT_PAGE,
                        )
                        for a in page:
                            i = int((a.started - since).total_seconds() // every)
                            if 0 <= i < buckets:
                                counts[i] += 1
                                durations[i] += a.duration_ms
                        if len(page) < MAX_ATTEMPT_PAGE:
                            break
                        after = page[-1].id
    except NotSupported:
        return None
    latency: list[float] = []
    for count, total in zip(counts, durations, strict=True):
        # No delivery in a bucket says nothing of latency: the last one stands.
        latency.append(total / count if count else (latency[-1] if latency else 0.0))
    return Drawn([c / every for c in counts], latency, complete)

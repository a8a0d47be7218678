"""What a load run saw: answers by status, transport errors, acknowledged events, latencies."""

from __future__ import annotations

from typing import Final

import msgspec

from loadgen.histogram import LatencyHistogram

ACCEPTED: Final = 202
_SAMPLE_BYTES: Final = 300


class LoadResult(msgspec.Struct):
    """Counts of one run (of one worker process, or all of them merged).

    Requests sent during the warm-up are counted apart (`warmup_*`) and not in the figures;
    `warmup_events_acknowledged` lets a server's CPU and writes over the whole run, warm-up
    included, be divided by every event it took in that time.
    `latency` holds the acknowledgement latency of 202 answers only, in nanoseconds: from the
    moment the request was due (open loop) or sent (closed loop) to the end of its answer.
    Every other answer is counted in `statuses` with one sample body per status in `samples`;
    requests that got no answer are in `errors` by kind; in open-loop mode, requests that were
    due but found no free connection before the end are `unsent`.
    """

    elapsed: float = 0.0
    statuses: dict[int, int] = msgspec.field(default_factory=dict)
    errors: dict[str, int] = msgspec.field(default_factory=dict)
    samples: dict[int, str] = msgspec.field(default_factory=dict)
    events_acknowledged: int = 0
    events_not_accepted: int = 0
    unsent: int = 0
    latency: LatencyHistogram = msgspec.field(default_factory=LatencyHistogram)
    warmup_statuses: dict[int, int] = msgspec.field(default_factory=dict)
    warmup_errors: int = 0
    warmup_events_acknowledged: int = 0

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())

    @property
    def accepted_requests(self) -> int:
        return self.statuses.get(ACCEPTED, 0)

    @property
    def failed_requests(self) -> int:
        """Requests that were sent and did not get a 202 (another status, or no answer)."""
        return self.answered - self.accepted_requests + sum(self.errors.values())

    @property
    def requests_per_second(self) -> float:
        return self.accepted_requests / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def events_per_second(self) -> float:
        return self.events_acknowledged / self.elapsed if self.elapsed > 0 else 0.0

    def count_answer(self, status: int, body: bytes, *, warmup: bool) -> None:
        book = self.warmup_statuses if warmup else self.statuses
        book[status] = book.get(status, 0) + 1
        if status != ACCEPTED and status not in self.samples:
            self.samples[status] = body[:_SAMPLE_BYTES].decode(errors="replace")

    def count_error(self, kind: str, *, warmup: bool) -> None:
        if warmup:
            self.warmup_errors += 1
        else:
            self.errors[kind] = self.errors.get(kind, 0) + 1

    def merge(self, other: LoadResult) -> None:
        # Workers run side by side over the same window: the run lasts as long as the longest.
        self.elapsed = max(self.elapsed, other.elapsed)
        for mine, theirs in (
            (self.statuses, other.statuses),
            (self.warmup_statuses, other.warmup_statuses),
        ):
            for status, count in theirs.items():
                mine[status] = mine.get(status, 0) + count
        for kind, count in other.errors.items():
            self.errors[kind] = self.errors.get(kind, 0) + count
        for status, sample in other.samples.items():
            self.samples.setdefault(status, sample)
        self.events_acknowledged += other.events_acknowledged
        self.events_not_accepted += other.events_not_accepted
        self.unsent += other.unsent
        self.warmup_errors += other.warmup_errors
        self.warmup_events_acknowledged += other.warmup_events_acknowledged
        self.latency.merge(other.latency)


def accepted_count(body: bytes) -> int | None:
    """`accepted` from an ingest answer, found without decoding the JSON (cheap per request)."""
    at = body.find(b'"accepted":')
    if at < 0:
        return None
    at += 11
    end = at
    while end < len(body) and body[end] in b" 0123456789":
        end += 1
    try:
        return int(body[at:end])
    except ValueError:
        return None

"""The scale-out delivery history: one message per attempt in the stream `<namespace>_attempts`.

An attempt's subject is `<namespace>.attempts.<tenant>.<bus>.<target>.<event>`, where `target`
digests the rule and target id and `event` the event id, so that both reads are one subject
filter: an event's attempts (`...<bus>.*.<event>`) and a target's (`...<target>.*`). The stream
sequence is the attempt's id: it follows the order of writes, as the embedded table's rowid
does. The body is a MessagePack array (`AttemptRecord`). Attempts are published beside the
writes that settle them (an ack, a retry, a dead letter) and kept until retention trims them
with the log (docs/delivery-history.md, "Scale-out").
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Final

import msgspec

from stellwerk.clock import to_us
from stellwerk.refs import BusRef, TenantName
from stellwerk.seams import ATTEMPT_OUTCOMES, Attempt, AttemptOutcome, RecordedAttempt
from stellwerk.storage.jetstream import Put, ensure_stream, log_config
from stellwerk.storage.jetstream import stored as stored_message
from stellwerk.storage.queue.contract import carries
from stellwerk.storage.queue.jetstream.records import QueueLayout
from stellwerk.storage.queue.jetstream.store import DeliveryStore, unavailable_as_queue_error

_OUTCOME_CODES: Final = {outcome: code for code, outcome in enumerate(ATTEMPT_OUTCOMES)}
READ_BATCH: Final = 500  # attempts one read asks for
CLOCK_SKEW: Final = timedelta(minutes=5)  # a worker's clock ahead of JetStream's, at most


class AttemptRecord(msgspec.Struct, frozen=True, array_like=True):
    """An attempt as stored: positional fields, the outcome as its index in
    `ATTEMPT_OUTCOMES`. Durable format: fields are only ever added at the end, with defaults."""

    tenant: str
    bus: str
    rule: str
    target_id: str
    event_id: str
    position: int
    attempt: int
    started_us: int
    duration_us: int
    outcome: int
    status: int | None = None
    error: str | None = None
    excerpt: str = ""


_encode: Final = msgspec.msgpack.Encoder().encode
_decode: Final = msgspec.msgpack.Decoder(AttemptRecord).decode


def attempt_put(layout: QueueLayout, a: Attempt) -> Put:
    record = AttemptRecord(
        a.tenant, a.bus, a.rule, a.target_id, a.event_id, a.position, a.attempt,
        a.started_us, a.duration_us, _OUTCOME_CODES[a.outcome], a.status, a.error, a.excerpt,
    )  # fmt: skip
    body = _encode(record)
    subject = layout.attempt_subject(a.tenant, a.bus, a.rule, a.target_id, a.event_id)
    return Put(subject, body)


def _recorded(seq: int, data: bytes) -> RecordedAttempt:
    r = _decode(data)
    return RecordedAttempt(
        id=seq,
        attempt=Attempt(
            tenant=TenantName(r.tenant),
            bus=r.bus,
            rule=r.rule,
            target_id=r.target_id,
            event_id=r.event_id,
            position=r.position,
            attempt=r.attempt,
            started_us=r.started_us,
            duration_us=r.duration_us,
            outcome=ATTEMPT_OUTCOMES[r.outcome],
            status=r.status,
            error=r.error,
            excerpt=r.excerpt,
        ),
    )


class AttemptStore:
    """The attempts stream of one namespace, on the queue's connection."""

    def __init__(self, store: DeliveryStore) -> None:
        self.store = store
        self.layout = store.layout

    async def ensure_stream(self) -> None:
        config = log_config(
            self.layout.attempts_stream,
            [self.layout.attempts_subjects],
            replicas=self.store.replicas,
            dedup_window=self.store.dedup_window,
        )
        with unavailable_as_queue_error():
            await ensure_stream(self.store.conn, config)

    def puts(self, attempts: Sequence[Attempt | None]) -> list[Put]:
        return [attempt_put(self.layout, a) for a in attempts if a is not None]

    async def record(self, attempts: Sequence[Attempt | None]) -> None:
        await self.store.put_many(self.puts(attempts))

    async def event_attempts(self, bus: BusRef, event_id: str) -> list[RecordedAttempt]:
        subjects = self.layout.event_attempts(bus.tenant, bus.bus, event_id)
        out: list[RecordedAttempt] = []
        async for page in self.store.scan(self.layout.attempts_stream, subjects, 1, READ_BATCH):
            for stored in page:
                recorded = _recorded(stored.seq, stored.data)
                if recorded.attempt.event_id == event_id:  # a digest's collision stays out
                    out.append(recorded)
        return out

    async def target_attempts(
        self,
        bus: BusRef,
        rule: str,
        target_id: str,
        since: datetime | None,
        until: datetime | None,
        outcome: AttemptOutcome | None,
        after: int,
        limit: int,
    ) -> list[RecordedAttempt]:
        """Reads the target's attempts from `after` on until the page is full; the time and
        outcome filters apply to what is read. With `since`, the read starts at the first
        attempt JetStream stored at `since - CLOCK_SKEW` or later: an attempt is stored after
        it started, by the server's clock, which may be behind the worker's."""
        subjects = self.layout.target_attempts(bus.tenant, bus.bus, rule, target_id)
        if since is not None:
            after = max(after, await self._stored_before(subjects, since - CLOCK_SKEW))
        since_us = None if since is None else to_us(since)
        until_us = None if until is None else to_us(until)
        code = None if outcome is None else _OUTCOME_CODES[outcome]
        out: list[RecordedAttempt] = []
        stream = self.layout.attempts_stream
        async for page in self.store.scan(stream, subjects, after + 1, READ_BATCH):
            for stored in page:
                r = _decode(stored.data)
                if (
                    (r.rule, r.target_id) != (rule, target_id)
                    or (since_us is not None and r.started_us < since_us)
                    or (until_us is not None and r.started_us >= until_us)
                    or (code is not None and r.outcome != code)
                ):
                    continue
                out.append(_recorded(stored.seq, stored.data))
                if len(out) == limit:
                    return out
        return out

    async def _stored_before(self, subjects: str, moment: datetime) -> int:
        """The sequence before the first message on `subjects` stored at `moment` or later (the
        last sequence of the stream if there is none)."""
        stream = self.layout.attempts_stream
        request = {"start_time": moment.isoformat(), "batch": 1, "next_by_subj": subjects}
        with unavailable_as_queue_error():
            page = await self.store.conn.direct_batch(stream, request)
            found = [stored_message(m) for m in page]
        if found:
            return found[0].seq - 1
        with unavailable_as_queue_error():
            info = await self.store.conn.api(f"$JS.API.STREAM.INFO.{stream}")
        return int(info["state"]["last_seq"])

    async def trim(self, older_than: datetime) -> int:
        """Purge the attempts below the first one started at `older_than` or later: sequences
        follow the order of writes, nearly that of starts, so a pass reads about as many
        attempts as it removes (a slow attempt written after a younger one stays until the
        next pass)."""
        cut_us = to_us(older_than)
        stream = self.layout.attempts_stream
        bound: int | None = None
        last = 0
        async for page in self.store.scan(stream, self.layout.attempts_subjects, 1, READ_BATCH):
            for stored in page:
                if _decode(stored.data).started_us >= cut_us:
                    bound = stored.seq
                    break
                last = stored.seq
            if bound is not None:
                break
        if bound is None:
            if not last:
                return 0
            bound = last + 1
        with unavailable_as_queue_error():
            answer = await self.store.conn.api(f"$JS.API.STREAM.PURGE.{stream}", {"seq": bound})
        return int(answer.get("purged", 0))

    async def erase(
        self,
        tenant: TenantName,
        bus: str | None,
        positions: Collection[tuple[str, int]],
        needle: bytes,
    ) -> int:
        """Erase (overwrite, then delete) the tenant's attempts of `positions`, and those whose
        answer or error holds `needle`."""
        stream = self.layout.attempts_stream
        subjects = self.layout.tenant_attempts(tenant, bus)
        removed = 0
        async for page in self.store.scan(stream, subjects, 1, READ_BATCH):
            for stored in page:
                r = _decode(stored.data)
                if (
                    (r.bus, r.position) in positions
                    or carries(needle, r.excerpt)
                    or (r.error is not None and carries(needle, r.error))
                ) and await self.store.delete(stream, stored.seq, erase=True):
                    removed += 1
        return removed

"""Dead letters of the JetStream delivery queue: records in the table, paged and redriven.

A dead letter is the table record `dead.<id>`, payload included, written before its lane moves
on, so a crash in between leaves the delivery both dead and at its lane's head (a worker may
dead-letter it once more, which writes the same record again), never lost. A dead letter that
goes (redriven or erased) leaves an empty record that expires after the dedup window, so every
process's scan sees it go.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Final

from stellwerk.clock import from_us
from stellwerk.refs import BusRef
from stellwerk.seams import DeadLetter
from stellwerk.storage.jetstream import Put
from stellwerk.storage.queue.jetstream.index import LaneView
from stellwerk.storage.queue.jetstream.lanes import Lanes
from stellwerk.storage.queue.jetstream.records import (
    DELIVERY_HEADER,
    DeadRecord,
    MemberMeta,
    decode_dead,
    decode_meta,
    encode,
)

REDRIVE_LANES: Final = 64  # lanes a redrive works on at once


class DeadLetters:
    def __init__(self, lanes: Lanes) -> None:
        self.lanes = lanes
        self.store = lanes.store
        self.index = lanes.index
        self.layout = lanes.layout

    async def bury(self, view: LaneView, error: str, dead_us: int) -> None:
        """Make the lane's head a dead letter, then move the lane on."""
        delivery_id = view.state.head
        member = await self.store.member(view.state.member)
        if member is not None:
            meta = decode_meta(member.headers[DELIVERY_HEADER])
            state = view.state
            record = DeadRecord(
                id=delivery_id, lane=view.lane, tenant=state.tenant, bus=state.bus,
                rule=state.rule, target_id=state.target_id, event_id=meta.event_id,
                event_source=meta.event_source, position=meta.position,
                recorded_us=meta.recorded_us, dead_us=dead_us, attempts=state.attempts + 1,
                content_type=meta.content_type, payload=member.data, last_error=error,
                ordering_key=meta.ordering_key,
            )  # fmt: skip
            seq = await self.store.put(Put(self.layout.dead_key(delivery_id), encode(record)))
            assert seq is not None  # written without an expected sequence
            self.index.apply_dead(delivery_id, seq, record)
        if not await self.lanes.finish(view.lane, delivery_id) and member is not None:
            # Finished by someone else meanwhile (acked after its lease ran out, or erased).
            await self.drop(delivery_id)

    async def drop(self, delivery_id: int, *, erase: bool = False) -> bool:
        """Remove a dead letter: its record's bytes (overwritten if `erase`), then an empty
        record the scans will see. False if there was none."""
        key = self.layout.dead_key(delivery_id)
        stored = await self.store.last(key)
        if stored is None or not stored.data:
            return False
        await self.store.delete(self.layout.table_stream, stored.seq, erase=erase)
        seq = await self.store.put(Put(key, b"", expected=0, ttl=self.lanes.idle_ttl))
        if seq is not None:
            self.index.apply_dead(delivery_id, seq, None)
        else:
            self.index.forget_dead(delivery_id)
        return True

    async def record(self, delivery_id: int) -> DeadRecord | None:
        stored = await self.store.last(self.layout.dead_key(delivery_id))
        if stored is None or not stored.data:
            self.index.forget_dead(delivery_id)  # redriven or erased by another process
            return None
        record = decode_dead(stored.data)
        self.index.apply_dead(delivery_id, stored.seq, record)
        return record

    async def page(
        self, bus: BusRef, *, rule: str | None, target_id: str | None, after: int, limit: int
    ) -> list[DeadLetter]:
        """Up to `limit` dead letters with ids above `after`, in id order, as the leader has
        them (one the index still lists but another process redrove is skipped)."""
        ids = self.index.dead_ids(bus.tenant, bus.bus, rule=rule, target_id=target_id, after=after)
        out: list[DeadLetter] = []
        while ids and len(out) < limit:
            chunk, ids = ids[: limit - len(out)], ids[limit - len(out) :]
            records = await asyncio.gather(*(self.record(i) for i in chunk))
            out.extend(_dead_letter(r) for r in records if r is not None)
        return out

    async def redrive(self, bus: BusRef, ids: Sequence[int] | None, now_us: int) -> int:
        """Lanes are redriven side by side, each lane's dead letters in id order (so an
        ordered group keeps its order), at most `REDRIVE_LANES` lanes at once."""
        chosen = self.index.dead_ids(bus.tenant, bus.bus)
        if ids is not None:
            wanted = set(ids)
            chosen = [i for i in chosen if i in wanted]
        by_lane: dict[str, list[int]] = {}
        for delivery_id in chosen:
            by_lane.setdefault(self.index.dead_lane(delivery_id), []).append(delivery_id)
        room = asyncio.Semaphore(REDRIVE_LANES)

        async def lane_moved(lane_ids: list[int]) -> int:
            async with room:
                return sum([await self._redrive_one(i, now_us) for i in lane_ids])

        return sum(await asyncio.gather(*(lane_moved(i) for i in by_lane.values())))

    async def _redrive_one(self, delivery_id: int, now_us: int) -> bool:
        """Publish the dead delivery again as the last member of its lane, under its id; then
        remove its record (a compare-and-set: of two redrives at once, one moves it, and the
        other's member is a duplicate of the first's by its message id)."""
        key = self.layout.dead_key(delivery_id)
        stored = await self.store.last(key)
        if stored is None or not stored.data:
            return False
        record = decode_dead(stored.data)
        ordered = record.ordering_key is not None
        meta = MemberMeta(
            tenant=record.tenant, bus=record.bus, rule=record.rule, target_id=record.target_id,
            event_id=record.event_id, event_source=record.event_source,
            position=record.position, recorded_us=record.recorded_us,
            content_type=record.content_type, due_us=now_us, age_from_us=now_us,
            ordering_key=record.ordering_key, id=record.id, last_error=record.last_error,
        )  # fmt: skip
        member = Put(
            self.layout.member_subject(record.tenant, record.lane, ordered=ordered),
            record.payload,
            msg_id=f"redrive-{delivery_id}-{stored.seq}",
            headers={DELIVERY_HEADER: encode(meta).decode()},
        )
        await self.store.put(member)
        ttl = self.lanes.idle_ttl
        gone = await self.store.put(Put(key, b"", expected=stored.seq, ttl=ttl))
        if gone is None:
            return False
        self.index.apply_dead(delivery_id, gone, None)
        await self.lanes.install(record.tenant, record.lane, ordered=ordered)
        return True


def _dead_letter(record: DeadRecord) -> DeadLetter:
    return DeadLetter(
        id=record.id,
        tenant=record.tenant,
        bus=record.bus,
        rule=record.rule,
        target_id=record.target_id,
        event_id=record.event_id,
        event_source=record.event_source,
        position=record.position,
        recorded_time=from_us(record.recorded_us),
        dead_time=from_us(record.dead_us),
        attempts=record.attempts,
        last_error=record.last_error,
        payload=record.payload,
        content_type=record.content_type,
        ordering_key=record.ordering_key,
    )

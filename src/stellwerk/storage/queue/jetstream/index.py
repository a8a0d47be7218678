"""What one process knows of the JetStream delivery queue's table: lanes and dead letters.

A cache, never the authority: every write it leads to is a compare-and-set, so a stale entry
costs a failed write, not a wrong one (docs/scale-out.md, "Which lanes are due: the index").
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from stellwerk.refs import TenantName
from stellwerk.seams import TargetKey
from stellwerk.storage.queue.jetstream.records import DeadRecord, LaneState

_HeapEntry = tuple[int, int, str, int]  # (ready at, head id, lane, record sequence)


@dataclass(slots=True)
class LaneView:
    lane: str
    seq: int
    state: LaneState


@dataclass(slots=True)
class DeadView:
    id: int
    seq: int
    key: TargetKey | None  # None: redriven or erased (see the module's docstring)
    lane: str = ""


@dataclass(slots=True)
class TargetDepth:
    """What the index counts for one target; ordered lanes are counted by the stream."""

    unordered: int = 0
    ordered_lanes: list[str] = field(default_factory=list)
    in_flight: int = 0
    dead: int = 0
    oldest_recorded_us: int | None = None


class DeliveryIndex:
    def __init__(self) -> None:
        self._lanes: dict[str, LaneView] = {}
        self._heads: dict[int, str] = {}  # head delivery id -> its lane
        self._heaps: dict[TargetKey, list[_HeapEntry]] = {}
        self._queued: dict[str, int] = {}  # lane -> the record sequence its heap entry has
        self._entries = 0
        self._dead: dict[int, DeadView] = {}
        self._dead_by_bus: dict[tuple[str, str], set[int]] = {}
        self._keys: dict[TargetKey, TargetKey] = {}
        # Finished lanes and removed dead letters, by record sequence, until the scan passes.
        self._gone: list[tuple[int, str, int]] = []

    # -- feeding -------------------------------------------------------------------------------

    def apply_lane(self, lane: str, seq: int, state: LaneState | None) -> None:
        """Record `state` (None: the record was removed) as the lane's, unless older."""
        known = self._lanes.get(lane)
        if known is not None:
            if known.seq >= seq:
                return
            if known.state.live and self._heads.get(known.state.head) == lane:
                del self._heads[known.state.head]
        if state is None:
            state = LaneState(TenantName(""), "", "", "")
        view = LaneView(lane, seq, state)
        self._lanes[lane] = view
        if state.live:
            self._heads[state.head] = lane
            self._push(view)
        else:
            heapq.heappush(self._gone, (seq, lane, 0))

    def forget_lane(self, lane: str) -> None:
        """The table has no record of the lane any more (it expired)."""
        view = self._lanes.pop(lane, None)
        self._queued.pop(lane, None)
        if view is not None and view.state.live and self._heads.get(view.state.head) == lane:
            del self._heads[view.state.head]

    def apply_dead(self, delivery_id: int, seq: int, record: DeadRecord | None) -> None:
        known = self._dead.get(delivery_id)
        if known is not None:
            if known.seq >= seq:
                return
            if known.key is not None:
                self._dead_by_bus[known.key.tenant, known.key.bus].discard(delivery_id)
        if record is None:
            self._dead[delivery_id] = DeadView(delivery_id, seq, None)
            heapq.heappush(self._gone, (seq, "", delivery_id))
            return
        key = self._key(TargetKey(record.tenant, record.bus, record.rule, record.target_id))
        self._dead[delivery_id] = DeadView(delivery_id, seq, key, record.lane)
        self._dead_by_bus.setdefault((key.tenant, key.bus), set()).add(delivery_id)

    def forget_dead(self, delivery_id: int) -> None:
        known = self._dead.pop(delivery_id, None)
        if known is not None and known.key is not None:
            self._dead_by_bus[known.key.tenant, known.key.bus].discard(delivery_id)

    def prune(self, scanned: int) -> None:
        """The scan has read the table up to `scanned`: forget what finished at or below it."""
        gone = self._gone
        while gone and gone[0][0] <= scanned:
            seq, lane, delivery_id = heapq.heappop(gone)
            if lane:
                view = self._lanes.get(lane)
                if view is not None and view.seq == seq:
                    del self._lanes[lane]
                    self._queued.pop(lane, None)
            else:
                dead = self._dead.get(delivery_id)
                if dead is not None and dead.seq == seq:
                    del self._dead[delivery_id]

    def _key(self, key: TargetKey) -> TargetKey:
        return self._keys.setdefault(key, key)

    def _push(self, view: LaneView) -> None:
        state = view.state
        key = self._key(TargetKey(state.tenant, state.bus, state.rule, state.target_id))
        heap = self._heaps.setdefault(key, [])
        heapq.heappush(heap, (state.ready_at, state.head, view.lane, view.seq))
        self._queued[view.lane] = view.seq
        self._entries += 1
        if self._entries > 2 * len(self._heads) + 1024:
            self._compact()

    def _compact(self) -> None:
        """Drop the heap entries of records that changed since (they are skipped anyway)."""
        self._entries = 0
        for heap in self._heaps.values():
            heap[:] = [e for e in heap if self._current(e)]
            heapq.heapify(heap)
            self._entries += len(heap)
        for key in [key for key, heap in self._heaps.items() if not heap]:
            del self._heaps[key]

    def _current(self, entry: _HeapEntry) -> bool:
        view = self._lanes.get(entry[2])
        return (
            view is not None
            and view.seq == entry[3]
            and view.state.live
            and self._queued.get(entry[2]) == entry[3]
        )

    # -- questions -----------------------------------------------------------------------------

    def lane(self, lane: str) -> LaneView | None:
        view = self._lanes.get(lane)
        return view if view is not None and view.state.live else None

    def lane_of(self, delivery_id: int) -> str | None:
        """The lane whose head the delivery is, if it is one."""
        return self._heads.get(delivery_id)

    def take_due(self, now_us: int, limit: int, caps: Mapping[TargetKey, int]) -> list[LaneView]:
        """Up to `limit` lanes due at `now_us`, at most `caps[target]` of a capped target.

        Targets whose first lane has been due longest go first, each lane of a target in the
        order it came due. The lanes taken leave the heap: `requeue` those not leased.
        """
        due: list[tuple[int, TargetKey]] = []
        for key, heap in self._heaps.items():
            while heap and not self._current(heap[0]):
                heapq.heappop(heap)
                self._entries -= 1
            if heap and heap[0][0] <= now_us:
                due.append((heap[0][0], key))
        due.sort()
        out: list[LaneView] = []
        for _, key in due:
            room = min(limit - len(out), caps.get(key, limit))
            if room <= 0:
                if len(out) >= limit:
                    break
                continue
            heap = self._heaps[key]
            while room > 0 and heap and heap[0][0] <= now_us:
                entry = heapq.heappop(heap)
                self._entries -= 1
                if not self._current(entry):
                    continue
                del self._queued[entry[2]]
                out.append(self._lanes[entry[2]])
                room -= 1
        return out

    def requeue(self, lane: str) -> None:
        view = self.lane(lane)
        if view is not None and self._queued.get(lane) != view.seq:
            self._push(view)

    def dead_ids(
        self,
        tenant: TenantName,
        bus: str,
        *,
        rule: str | None = None,
        target_id: str | None = None,
        after: int = 0,
    ) -> list[int]:  # fmt: skip
        """The bus's dead letters (of one rule or target) with ids above `after`, in id order."""
        out = []
        for delivery_id in self._dead_by_bus.get((tenant, bus), ()):
            key = self._dead[delivery_id].key
            if delivery_id <= after or key is None:
                continue
            if (rule is None or key.rule == rule) and (
                target_id is None or key.target_id == target_id
            ):
                out.append(delivery_id)
        out.sort()
        return out

    def dead_lane(self, delivery_id: int) -> str:
        return self._dead[delivery_id].lane

    def dead_of_tenant(self, tenant: TenantName, bus: str | None) -> list[int]:
        return sorted(
            delivery_id
            for (owner, on_bus), ids in self._dead_by_bus.items()
            if owner == tenant and (bus is None or on_bus == bus)
            for delivery_id in ids
        )

    def oldest_recorded_us(self, tenant: TenantName, bus: str) -> int | None:
        """The recorded time of the bus's oldest unfinished delivery: a lane's head is the
        oldest of its lane (an ordered lane's members follow it in routing order)."""
        return min(
            (
                view.state.recorded_us
                for view in self._lanes.values()
                if view.state.live and view.state.tenant == tenant and view.state.bus == bus
            ),
            default=None,
        )

    def depth(self, now_us: int) -> dict[TargetKey, TargetDepth]:
        rows: dict[TargetKey, TargetDepth] = {}
        for view in self._lanes.values():
            state = view.state
            if not state.live:
                continue
            key = self._key(TargetKey(state.tenant, state.bus, state.rule, state.target_id))
            row = rows.setdefault(key, TargetDepth())
            if state.ordered:
                row.ordered_lanes.append(view.lane)
            else:
                row.unordered += 1
            if state.lease_until_us > now_us:
                row.in_flight += 1
            if row.oldest_recorded_us is None or state.recorded_us < row.oldest_recorded_us:
                row.oldest_recorded_us = state.recorded_us
        dead: Counter[TargetKey] = Counter(d.key for d in self._dead.values() if d.key is not None)
        for key, count in dead.items():
            rows.setdefault(key, TargetDepth()).dead = count
        return rows

"""Moving a lane on: installing its head, changing it, finishing it; each a compare-and-set.

A change that loses its compare-and-set is computed anew from the record read again, so it never
undoes another's write (docs/scale-out.md, "Ordered groups").
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Final

from stellwerk.refs import TenantName
from stellwerk.storage.jetstream import Put, Stored
from stellwerk.storage.queue.jetstream.index import DeliveryIndex, LaneView
from stellwerk.storage.queue.jetstream.records import (
    DELIVERY_HEADER,
    FINISHED_HEADER,
    ROLLUP,
    LaneState,
    QueueLayout,
    decode_lane,
    decode_meta,
    encode,
    head_state,
)
from stellwerk.storage.queue.jetstream.store import DeliveryStore, QueueUnavailable

CAS_ATTEMPTS: Final = 16


class Lanes:
    """The lane operations of one open queue: its store, its index, its names."""

    def __init__(
        self, store: DeliveryStore, index: DeliveryIndex, layout: QueueLayout,
        idle_ttl: timedelta,
    ) -> None:  # fmt: skip
        self.store = store
        self.index = index
        self.layout = layout
        # How long an idle lane's record stays: as long as a routed member's dedup id does,
        # so that routing a finished delivery again within the window installs nothing.
        self.idle_ttl = idle_ttl

    def member_subject(self, state: LaneState, lane: str) -> str:
        return self.layout.member_subject(state.tenant, lane, ordered=state.ordered)

    async def refresh(self, lane: str) -> LaneView | None:
        """The lane's record as the leader has it, into the index; its view if it is live."""
        stored = await self.store.last(self.layout.lane_key(lane))
        if stored is None:
            self.index.forget_lane(lane)
            return None
        self.index.apply_lane(lane, stored.seq, decode_lane(stored.data) if stored.data else None)
        return self.index.lane(lane)

    async def locate(self, delivery_id: int) -> LaneView | None:
        """The lane the delivery heads, if it heads one: by the index, or (a delivery this
        process has not seen head its lane) by its member message, whose sequence is its id."""
        lane = self.index.lane_of(delivery_id)
        if lane is not None:
            view = self.index.lane(lane)
        else:
            member = await self.store.member(delivery_id)
            if member is None or DELIVERY_HEADER not in member.headers:
                return None
            view = await self.refresh(member.subject.rpartition(".")[2])
        return view if view is not None and view.state.head == delivery_id else None

    async def install(self, tenant: TenantName, lane: str, *, ordered: bool) -> None:
        """If the lane is idle (or new) and has a member waiting, make the first one its head."""
        key = self.layout.lane_key(lane)
        subject = self.layout.member_subject(tenant, lane, ordered=ordered)
        for _ in range(CAS_ATTEMPTS):
            stored = await self.store.last(key)
            state = decode_lane(stored.data) if stored is not None and stored.data else None
            if stored is not None:
                self.index.apply_lane(lane, stored.seq, state)
            if state is not None and state.live:
                return
            after = state.member if state is not None else 0
            member = await self.store.next_member(subject, after)
            if member is None:
                return
            new = head_state(decode_meta(member.headers[DELIVERY_HEADER]), member.seq)
            expected = stored.seq if stored is not None else 0
            seq = await self.store.put(Put(key, encode(new), expected=expected))
            if seq is not None:
                self.index.apply_lane(lane, seq, new)
                return
        raise QueueUnavailable(f"lane {lane} changed {CAS_ATTEMPTS} times while installing")

    async def change_head(
        self, delivery_id: int, change: Callable[[LaneState], LaneState | None]
    ) -> bool:
        """Write `change(state)` if the delivery heads its lane; False if it does not (any
        more) or `change` returns None."""
        view = await self.locate(delivery_id)
        for _ in range(CAS_ATTEMPTS):
            if view is None or view.state.head != delivery_id:
                return False
            new = change(view.state)
            if new is None:
                return False
            lane = view.lane
            key = self.layout.lane_key(lane)
            seq = await self.store.put(Put(key, encode(new), expected=view.seq))
            if seq is not None:
                self.index.apply_lane(lane, seq, new)
                return True
            view = await self.refresh(lane)
        raise QueueUnavailable(f"a lane changed {CAS_ATTEMPTS} times while writing")

    async def finish(self, lane: str, delivery_id: int, *, erase: bool = False) -> bool:
        """The head is done: remove its member message, move the lane to the next or idle.

        The message goes first: a crash before the lane moves leaves a head whose message is
        gone, which `lease` notices and finishes. False if the delivery did not head the lane.
        """
        view = self.index.lane(lane)
        if view is None or view.state.head != delivery_id:
            view = await self.refresh(lane)
        if view is None or view.state.head != delivery_id:
            return False
        if not view.state.ordered and not erase:
            return await self._finish_alone(view, delivery_id)
        await self.store.delete(self.layout.members_stream, view.state.member, erase=erase)
        for _ in range(CAS_ATTEMPTS):
            state = view.state
            following: Stored | None = None
            if state.ordered:
                following = await self.store.next_member(
                    self.member_subject(state, lane), state.member
                )
            if following is not None:
                meta = decode_meta(following.headers[DELIVERY_HEADER])
                new, ttl = head_state(meta, following.seq), None
            else:
                new, ttl = state.idle(), self.idle_ttl
            key = self.layout.lane_key(lane)
            seq = await self.store.put(Put(key, encode(new), expected=view.seq, ttl=ttl))
            if seq is not None:
                self.index.apply_lane(lane, seq, new)
                if following is None and state.ordered:
                    await self.install(state.tenant, lane, ordered=True)
                return True
            fresh = await self.refresh(lane)
            if fresh is None or fresh.state.head != delivery_id:
                return False
            view = fresh
        raise QueueUnavailable(f"lane {lane} changed {CAS_ATTEMPTS} times while finishing")

    async def _finish_alone(self, view: LaneView, delivery_id: int) -> bool:
        """An unordered lane's finish in one round trip: the lane goes idle beside a marker
        that rolls its member message away (and expires with the idle record)."""
        lane = view.lane
        marker: Put | None = Put(
            self.member_subject(view.state, lane),
            b"",
            ttl=self.idle_ttl,
            headers={ROLLUP: "sub", FINISHED_HEADER: str(delivery_id)},
        )
        key = self.layout.lane_key(lane)
        for _ in range(CAS_ATTEMPTS):
            idle = view.state.idle()
            lane_put = Put(key, encode(idle), expected=view.seq, ttl=self.idle_ttl)
            seqs = await self.store.put_many([lane_put] if marker is None else [lane_put, marker])
            marker = None
            if seqs[0] is not None:
                self.index.apply_lane(lane, seqs[0], idle)
                return True
            fresh = await self.refresh(lane)
            if fresh is None or fresh.state.head != delivery_id:
                return False
            view = fresh
        raise QueueUnavailable(f"lane {lane} changed {CAS_ATTEMPTS} times while finishing")

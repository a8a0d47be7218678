"""Removing events from the tenant streams: trimming by age, and erasing chosen events.

A bus whose newest event goes gets a *mark* first, so `last_position` still knows it
(docs/scale-out.md, "Trimming and erasure").
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping
from typing import Final

from stellwerk.refs import BusRef, TenantName
from stellwerk.seams import ErasedEvent, EraseHook, EraseMatch, EventLogError
from stellwerk.storage.jetstream import Layout, StreamQueries, bus_of, nothing_left, records, token

ERASE_SCAN: Final = 1000  # messages one erase step reads before its finds are deleted
DELETES_AT_ONCE: Final = 64


class Upkeep:
    """Trims and erasures; `secure_erase` has JetStream overwrite an erased message's bytes
    (milliseconds per message), rather than only mark it deleted until its block is
    compacted."""

    def __init__(self, queries: StreamQueries, layout: Layout, *, secure_erase: bool) -> None:
        self._q = queries
        self._layout = layout
        self._secure_erase = secure_erase

    async def last_position(self, stream: str, events_subject: str) -> int:
        """The newer of the bus's newest event and its mark (an erasure may have taken the
        newest event and left older ones)."""
        marks = self._layout.marks_subject_of(events_subject)
        last, mark = await asyncio.gather(
            self._q.last_message(stream, events_subject), self._q.last_message(stream, marks)
        )
        return max(
            int(last["seq"]) if last is not None else 0,
            int(base64.b64decode(mark["data"])) if mark is not None else 0,
        )

    # -- trimming ------------------------------------------------------------------------------

    async def trim(self, cut_us: int, keep: Mapping[BusRef, int]) -> int:
        kept = {(token(ref.tenant), token(ref.bus)): position for ref, position in keep.items()}
        removed = 0
        for stream in await self._stream_names():
            removed += await self._trim_stream(stream, cut_us, kept)
        return removed

    async def _stream_names(self) -> list[str]:
        names: list[str] = []
        while True:
            answer = await self._q.conn.api(
                "$JS.API.STREAM.NAMES", {"subject": self._layout.every_tenant, "offset": len(names)}
            )
            page = answer.get("streams") or []
            names.extend(page)
            if not page or len(names) >= int(answer.get("total", 0)):
                return names

    async def _trim_stream(
        self, stream: str, cut_us: int, kept: Mapping[tuple[str, str], int]
    ) -> int:
        """Purge each bus of the stream below the first event recorded at `cut_us` or later
        (found once for the whole stream), or up to its keep position if that is lower."""
        state = await self._q.state(stream)
        if state is None:
            return 0
        every_bus = self._layout.events_of_stream(stream)
        boundary = await self._q.first_since(stream, every_bus, cut_us, state)
        if boundary <= int(state["first_seq"]):
            return 0
        removed = 0
        for subject in await self._q.subjects(stream, every_bus):
            _, _, tenant_token, bus_token = subject.split(".")
            keep_above = kept.get((tenant_token, bus_token))
            below = boundary if keep_above is None else min(boundary, keep_above + 1)
            last = await self._q.last_message(stream, subject)
            if last is not None and int(last["seq"]) < below:
                await self._mark(stream, subject, int(last["seq"]))
            answer = await self._q.conn.api(
                f"$JS.API.STREAM.PURGE.{stream}", {"filter": subject, "seq": below}
            )
            removed += int(answer.get("purged", 0))
        return removed

    async def _mark(self, stream: str, events_subject: str, position: int) -> None:
        """Keep a bus's last position before its newest event goes."""
        subject = self._layout.marks_subject_of(events_subject)
        reply = await (await self._q.conn.publish(subject, str(position).encode()))
        if not reply.data or b'"error"' in reply.data:
            raise EventLogError(f"cannot mark the last position of {subject}: {reply.data!r}")
        await self._q.conn.api(f"$JS.API.STREAM.PURGE.{stream}", {"filter": subject, "keep": 1})

    # -- erasing -------------------------------------------------------------------------------

    async def erase(
        self,
        tenant: TenantName,
        bus: str | None,
        needle: bytes,
        matches: EraseMatch,
        before: EraseHook | None,
    ) -> list[ErasedEvent]:
        """Scan each bus up to its newest message when the erase began; delete the finds a
        step at a time."""
        stream = self._layout.stream(tenant)
        state = await self._q.state(stream)
        if state is None:
            return []
        if bus is None:
            subjects = await self._q.subjects(stream, self._layout.all_events(tenant))
        else:
            subjects = [self._layout.events_subject(tenant, bus)]
        erased: list[ErasedEvent] = []
        for subject in subjects:
            erased += await self._erase_bus(
                stream, subject, int(state["last_seq"]), tenant, needle, matches, before
            )
        return erased

    async def _erase_bus(
        self,
        stream: str,
        subject: str,
        last_seq: int,
        tenant: TenantName,
        needle: bytes,
        matches: EraseMatch,
        before: EraseHook | None,
    ) -> list[ErasedEvent]:
        bus = bus_of(subject)
        newest = await self._q.last_message(stream, subject)
        erased: list[ErasedEvent] = []
        start = 1
        while start <= last_seq:
            found = await self._q.page(stream, subject, start, ERASE_SCAN)
            chunk: list[ErasedEvent] = []
            for msg in found:
                if records.sequence_of(msg) > last_seq:
                    break
                if needle not in msg.data:
                    continue
                event = records.stored_event(tenant, bus, msg)
                if matches(event):
                    chunk.append(ErasedEvent(tenant, bus, event.position, event.id, event.source))
            if chunk:
                if before is not None:
                    await before(chunk)
                if newest is not None and int(newest["seq"]) in {e.position for e in chunk}:
                    await self._mark(stream, subject, int(newest["seq"]))
                await self._delete(stream, [e.position for e in chunk])
                erased += chunk
            if not found or nothing_left(found[-1]):
                break
            start = records.sequence_of(found[-1]) + 1
        return erased

    async def _delete(self, stream: str, positions: list[int]) -> None:
        for first in range(0, len(positions), DELETES_AT_ONCE):
            await asyncio.gather(
                *(
                    self._q.conn.api(
                        f"$JS.API.STREAM.MSG.DELETE.{stream}",
                        {"seq": seq, "no_erase": not self._secure_erase},
                    )
                    for seq in positions[first : first + DELETES_AT_ONCE]
                )
            )

"""Questions the log asks a tenant's stream: its state, a subject's newest message, its bus
subjects, a page of stored messages, and where a recorded time begins.

Pages come from Direct Get batches, which any replica may answer: in a cluster a page can lag
an acknowledged append by the replication delay, but it is always a gapless prefix, so a
reader that pages on by position misses nothing. Whatever must see the latest write (the last
position of a bus, the state a trim starts from) asks the stream leader instead.
"""

from __future__ import annotations

from typing import Any, Final

from nats.aio.msg import Msg

from stellwerk.storage.jetstream import records
from stellwerk.storage.jetstream.connection import Connection, JetStreamApiError

STREAM_NOT_FOUND: Final = 10059
MESSAGE_NOT_FOUND: Final = 10037


class StreamQueries:
    """Read-only requests on streams over one connection."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def state(self, stream: str) -> dict[str, Any] | None:
        """The stream's state (`first_seq`, `last_seq`, …), or None if there is no stream."""
        try:
            answer = await self.conn.api(f"$JS.API.STREAM.INFO.{stream}")
        except JetStreamApiError as exc:
            if exc.err_code == STREAM_NOT_FOUND:
                return None
            raise
        state: dict[str, Any] = answer["state"]
        return state

    async def last_message(self, stream: str, subject: str) -> dict[str, Any] | None:
        """The newest message on `subject` (`seq`, base64 `data`), from the stream leader."""
        try:
            answer = await self.conn.api(
                f"$JS.API.STREAM.MSG.GET.{stream}", {"last_by_subj": subject}
            )
        except JetStreamApiError as exc:
            if exc.err_code == MESSAGE_NOT_FOUND:
                return None
            raise
        message: dict[str, Any] = answer["message"]
        return message

    async def subjects(self, stream: str, pattern: str) -> list[str]:
        """The subjects matching `pattern` that hold messages, sorted."""
        found: list[str] = []
        while True:
            answer = await self.conn.api(
                f"$JS.API.STREAM.INFO.{stream}",
                {"subjects_filter": pattern, "offset": len(found)},
            )
            page = list((answer["state"].get("subjects") or {}).keys())
            found.extend(page)
            if not page or len(found) >= int(answer.get("total", 0)):
                return sorted(found)

    async def page(self, stream: str, subject: str, start: int, batch: int) -> list[Msg]:
        """Up to `batch` stored messages on `subject` (a wildcard is fine) from `start` on."""
        return await self.conn.direct_batch(
            stream, {"seq": start, "next_by_subj": subject, "batch": batch}
        )

    async def first_since(
        self, stream: str, subject: str, since_us: int, state: dict[str, Any]
    ) -> int:
        """A sequence after every event on `subject` recorded before `since_us` and at or
        before the first one recorded at `since_us` or later.

        A binary search over the recorded times, which grow with the sequence (within one
        process exactly, between processes up to their clocks' skew): each probe is the first
        event at or after the middle, so a search costs about log2(stream length) requests.
        """
        low, high = int(state["first_seq"]), int(state["last_seq"]) + 1
        while low < high:
            middle = (low + high) // 2
            found = await self.page(stream, subject, middle, 1)
            if not found or records.recorded_us_of(found[0]) >= since_us:
                high = middle
            else:
                low = records.sequence_of(found[0]) + 1
        return low


def nothing_left(msg: Msg) -> bool:
    """Whether a batch reply says no more messages match after it."""
    pending = msg.headers.get(records.NUM_PENDING) if msg.headers else None
    return pending is not None and int(pending) == 0

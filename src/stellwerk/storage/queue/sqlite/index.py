"""What the embedded queue keeps in memory beside its tables, and the writes that keep it true.

Target ids, a lower bound of each target's earliest due time (so a lease visits only targets
with work due), the next delivery id, the leases, and the router cursors this queue moved. All
of it is changed in the engine's writer thread, and rebuilt from the file after a rollback or
when another process committed to it (`stale`).
"""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Final

from stellwerk.clock import to_us
from stellwerk.refs import BusRef
from stellwerk.seams import NewDelivery, TargetKey
from stellwerk.storage.queue.sqlite import schema
from stellwerk.storage.queue.sqlite.schema import READY, WAITING

_ACK_CHUNK: Final = 500  # ids per DELETE, below SQLite's host-parameter limit
# Smaller payloads are cheaper copied than pointed at: a 330-byte event to two targets cost
# 64-67 us of CPU per event routed, leased and acked shared, 64 copied (and 10% fewer bytes);
# a 2 KB one 115 shared against 129 copied (docs/storage.md, "Shared bodies").
_SHARED_MIN_BYTES: Final = 1024
# About what a delivery's row and index entries take beside its payload: a replayed delivery
# that points at its archived copy stores a tail of some 20 bytes, and the WAL's bound
# (`Engine.grew`) must still hear of its row.
_ROW_BYTES: Final = 128


class QueueIndex:
    def __init__(self, *, refer: bool = False) -> None:
        # Deliveries may point at archived copies (`NewDelivery.archived_seq`): the archive's
        # tables are in this file (`schema.refer_to_archive`).
        self.refer = refer
        self.target_ids: dict[TargetKey, int] = {}
        self.keys: dict[int, TargetKey] = {}
        self.earliest: dict[int, int] = {}  # target -> lower bound of its earliest ready due_us
        self.stale = True
        self.last_id = 0  # the highest delivery id this queue has seen or handed out
        # Leases: delivery id -> (target, until_us), and how many each target has. The writer
        # changes them; `depth` reads them from another thread, hence the lock.
        self.lease_lock = threading.Lock()
        self.leases: dict[int, tuple[int, int]] = {}
        self.lease_counts: Counter[int] = Counter()
        # Router cursors: where this queue last moved each bus (`routed`), and those moves not
        # written yet (`unwritten`, runs without deliveries: see `SqliteDeliveryQueue._route`).
        self.cursor_lock = threading.Lock()
        self.routed: dict[BusRef, int] = {}
        self.unwritten: dict[BusRef, int] = {}

    def forget(self) -> None:
        """What this queue knows of the file may be wrong: a rollback, or another process's
        commit. Read it again before it is used."""
        self.stale = True
        with self.cursor_lock:
            self.routed.clear()

    def refresh(self, conn: sqlite3.Connection) -> None:
        if not self.stale:
            return
        self.target_ids.clear()
        self.keys.clear()
        for target, tenant, bus, rule, target_id in conn.execute(
            "SELECT target, tenant, bus, rule, target_id FROM targets"
        ):
            key = TargetKey(tenant, bus, rule, target_id)
            self.target_ids[key] = target
            self.keys[target] = key
        # One seek of the ready index per target, however long the queue.
        self.earliest = {
            target: due
            for target, due in conn.execute(
                "SELECT target, (SELECT min(due_us) FROM deliveries AS d"
                " WHERE d.target = t.target AND d.state = 0) FROM targets AS t"
            )
            if due is not None
        }
        # Ids are never reused while the process runs (SQLite would reuse the highest after its
        # row is deleted): a worker still settling delivery 7 must not mistake a new delivery 7
        # for its own, and a lease is kept by id.
        top = conn.execute("SELECT max(id) FROM deliveries").fetchone()[0]
        self.last_id = max(self.last_id, top or 0)
        self.stale = False

    # -- router cursors ------------------------------------------------------------------------

    def stored_cursor(self, conn: sqlite3.Connection, key: BusRef) -> int:
        """The bus's cursor as stored, or as moved by this queue and not written yet."""
        row = conn.execute(schema.CURSOR, (key.tenant, key.bus)).fetchone()
        with self.cursor_lock:
            return max(row[0] if row else 0, self.unwritten.get(key, 0))

    def moved(self, key: BusRef, position: int, *, written: bool) -> None:
        with self.cursor_lock:
            self.routed[key] = position
            if written:
                # The stored cursor is past anything not written yet.
                self.unwritten.pop(key, None)
            else:
                self.unwritten[key] = position

    def write_cursors(self, conn: sqlite3.Connection) -> None:
        with self.cursor_lock:
            moves, self.unwritten = self.unwritten, {}
        conn.executemany(
            schema.SET_CURSOR,
            [(key.tenant, key.bus, position) for key, position in moves.items()],
        )

    # -- targets and due times -----------------------------------------------------------------

    def target(self, conn: sqlite3.Connection, key: TargetKey) -> int:
        target = self.target_ids.get(key)
        if target is None:
            # Another process may have made it (its commit made this index stale, and the
            # refresh before this write read it), so look before inserting.
            row = conn.execute(
                "SELECT target FROM targets WHERE tenant = ? AND bus = ? AND rule = ?"
                " AND target_id = ?",
                key,
            ).fetchone()
            if row is None:
                row = conn.execute(
                    "INSERT INTO targets (tenant, bus, rule, target_id) VALUES (?, ?, ?, ?)"
                    " RETURNING target",
                    key,
                ).fetchone()
            target = self.target_ids[key] = row[0]
            self.keys[target] = key
        return target

    def lower(self, target: int, due_us: int) -> None:
        current = self.earliest.get(target)
        if current is None or due_us < current:
            self.earliest[target] = due_us

    def promote(self, conn: sqlite3.Connection, target: int, ordering_key: str) -> None:
        """The head of an ordered group finished: the next delivery of the group is ready."""
        row = conn.execute(schema.NEXT_IN_GROUP, (target, ordering_key)).fetchone()
        if row is not None:
            conn.execute("UPDATE deliveries SET state = 0 WHERE id = ?", (row[0],))
            self.lower(target, row[1])

    def unlease(self, delivery_id: int) -> None:
        with self.lease_lock:
            held = self.leases.pop(delivery_id, None)
            if held is not None:
                self.lease_counts[held[0]] -= 1

    # -- writes --------------------------------------------------------------------------------

    def enqueue(
        self, conn: sqlite3.Connection, deliveries: Sequence[NewDelivery], now_us: int | None
    ) -> int:
        """Insert checked deliveries, due at their event's recorded time or (replays) at `now_us`;
        return about the bytes stored (payloads and rows).

        The due time is also where the maximum event age counts from.
        """
        rows = []
        heads: set[tuple[int, str]] = set()
        refer = self.refer
        bodies = _share_bodies(conn, deliveries, refer)
        stored = 0
        # Deliveries come in runs of one target and of one recorded time (the events of a log
        # group share theirs): each is looked up once per run, not once per delivery.
        key: TargetKey | None = None
        target = 0
        moment: datetime | None = None
        recorded = 0
        last_id = self.last_id
        for d in deliveries:
            if (
                key is None
                or d.rule != key.rule
                or d.target_id != key.target_id
                or d.bus != key.bus
                or d.tenant != key.tenant
            ):
                key = TargetKey(d.tenant, d.bus, d.rule, d.target_id)
                target = self.target(conn, key)
            state = READY
            if d.ordering_key is not None:
                group = (target, d.ordering_key)
                if group in heads or conn.execute(schema.GROUP_BUSY, group).fetchone():
                    state = WAITING
                heads.add(group)
            if d.recorded_time is not moment:
                moment = d.recorded_time
                recorded = to_us(moment)
            due = recorded if now_us is None else now_us
            if state == READY:
                self.lower(target, due)
            payload, archived, kept = d.payload, None, None
            if refer and d.archived_kept:
                archived, kept, payload = (
                    d.archived_seq,
                    d.archived_kept,
                    payload[d.archived_kept :],
                )
                body = None
            else:
                body = bodies.get(payload) if bodies else None
                if body is not None:
                    payload = b""
            stored += len(payload) + _ROW_BYTES
            last_id += 1
            rows.append(
                (last_id, target, state, due, d.event_id, d.event_source, d.position,
                 recorded, due, payload, d.content_type, d.ordering_key, body, archived, kept)
            )  # fmt: skip
        self.last_id = last_id
        schema.INSERT(conn, rows)
        return stored

    def remove(self, conn: sqlite3.Connection, ids: Sequence[int]) -> Counter[int]:
        """Delete finished (acked or erased) deliveries; return how many of each state went.

        The next delivery of an ordered group becomes ready, and a shared body goes with the
        last delivery that points at it.
        """
        states: Counter[int] = Counter()
        for start in range(0, len(ids), _ACK_CHUNK):
            chunk = ids[start : start + _ACK_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(
                f"DELETE FROM deliveries WHERE id IN ({marks})"
                " RETURNING target, state, ordering_key, body",
                chunk,
            ).fetchall()
            for delivery_id in chunk:
                self.unlease(delivery_id)
            released: set[int] = set()
            for target, state, ordering_key, body in rows:
                states[state] += 1
                if state == READY and ordering_key is not None:
                    self.promote(conn, target, ordering_key)
                if body is not None:
                    released.add(body)
            if released:
                # The bodies no delivery points at any more go. Not a count kept per ack: an
                # UPDATE rewrites the whole row, the payload with it (SQLite has no partial row
                # writes), and that cost more than copying the payload for each delivery did.
                marks = ",".join("?" * len(released))
                conn.execute(
                    f"DELETE FROM bodies WHERE id IN ({marks}) AND NOT EXISTS"
                    " (SELECT 1 FROM deliveries AS d WHERE d.body = bodies.id)",
                    list(released),
                )
        return states


def _share_bodies(
    conn: sqlite3.Connection, deliveries: Sequence[NewDelivery], refer: bool
) -> dict[bytes, int]:
    """Store each payload that several of `deliveries` carry once; payload -> its body id.

    Payloads are shared by the deliveries of one event to several targets. When every delivery
    is of another event (a replay to one rule), there is nothing to share, and no payload is
    even hashed to find that out. Deliveries that point at an archived copy (`refer`) need no
    body.
    """
    if len({d.position for d in deliveries}) == len(deliveries):
        return {}
    uses = Counter(
        d.payload
        for d in deliveries
        if len(d.payload) >= _SHARED_MIN_BYTES and not (refer and d.archived_kept)
    )
    return {
        payload: conn.execute(
            "INSERT INTO bodies (payload, refs) VALUES (?, ?) RETURNING id", (payload, refs)
        ).fetchone()[0]
        for payload, refs in uses.items()
        if refs > 1
    }

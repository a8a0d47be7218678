"""The embedded queue's reads that write nothing: dead letters, depth, a replay's cursor, and the
pages an erasure looks through. Each is a function of a connection (a reader's, or the writer's
for the synced ones)."""

from __future__ import annotations

import sqlite3
from collections import Counter
from typing import Final

from stellwerk.clock import from_us
from stellwerk.refs import BusRef, TenantName
from stellwerk.seams import DeadLetter, QueueDepth, ReplayCursor, TargetKey
from stellwerk.storage.queue.sqlite import schema
from stellwerk.storage.queue.sqlite.index import QueueIndex

ERASE_PAGE: Final = 1000  # deliveries an erasure looks at per step


def dead_letters(
    conn: sqlite3.Connection,
    bus: BusRef,
    rule: str | None,
    target_id: str | None,
    after: int,
    limit: int,
) -> list[DeadLetter]:
    tenant, name = bus.tenant, bus.bus
    rows = conn.execute(
        f"SELECT {schema.DEAD_COLUMNS} FROM targets AS t"
        " JOIN deliveries AS d ON d.target = t.target AND d.state = 2"
        " LEFT JOIN bodies AS b ON b.id = d.body"
        " WHERE t.tenant = :tenant AND t.bus = :bus"
        " AND (:rule IS NULL OR t.rule = :rule)"
        " AND (:target_id IS NULL OR t.target_id = :target_id)"
        " AND d.id > :after ORDER BY d.id LIMIT :limit",
        {"tenant": tenant, "bus": name, "rule": rule, "target_id": target_id,
         "after": after, "limit": limit},
    ).fetchall()  # fmt: skip
    copies = schema.archived_bodies(conn, (r[13] for r in rows))
    return [
        DeadLetter(
            id=r[0], tenant=tenant, bus=name, rule=r[1], target_id=r[2], event_id=r[3],
            event_source=r[4], position=r[5], recorded_time=from_us(r[6]),
            dead_time=from_us(r[7]), attempts=r[8], last_error=r[9],
            payload=r[10] if r[13] is None else copies[r[13]][: r[14]] + r[10],
            content_type=r[11], ordering_key=r[12],
        )
        for r in rows
    ]  # fmt: skip


def depth(conn: sqlite3.Connection, index: QueueIndex, now_us: int) -> list[QueueDepth]:
    """Per target: pending, in flight (the leases of this process), dead, the oldest's age."""
    rows = conn.execute(
        "SELECT d.target, t.tenant, t.bus, t.rule, t.target_id,"
        " sum(d.state < 2), sum(d.state = 2),"
        " min(CASE WHEN d.state < 2 THEN d.recorded_us END)"
        " FROM deliveries AS d JOIN targets AS t ON t.target = d.target"
        " GROUP BY d.target ORDER BY t.tenant, t.bus, t.rule, t.target_id"
    ).fetchall()
    with index.lease_lock:
        leased = Counter(t for t, until in index.leases.values() if until > now_us)
    out = []
    for target, tenant, bus, rule, target_id, unfinished, dead, oldest in rows:
        # The lease map and the file are read apart: keep the counts consistent.
        in_flight = min(leased[target], unfinished)
        out.append(
            QueueDepth(
                key=TargetKey(tenant, bus, rule, target_id),
                pending=unfinished - in_flight,
                in_flight=in_flight,
                dead=dead,
                oldest_pending_seconds=(
                    None if oldest is None else max(0, now_us - oldest) / 1_000_000
                ),
            )
        )
    return out


def oldest_pending(conn: sqlite3.Connection, bus: BusRef) -> int | None:
    """The recorded time (µs) of the bus's oldest unfinished delivery: a scan of the bus's
    unfinished ones (a standby's peer asks once a second; no index costs every route)."""
    row = conn.execute(
        "SELECT min(d.recorded_us) FROM targets AS t JOIN deliveries AS d"
        " ON d.target = t.target AND d.state < 2 WHERE t.tenant = ? AND t.bus = ?",
        (bus.tenant, bus.bus),
    ).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def replay_cursor(conn: sqlite3.Connection, tenant: TenantName, replay: str) -> ReplayCursor:
    row = conn.execute(schema.REPLAY_CURSOR, (tenant, replay)).fetchone()
    return ReplayCursor(0, 0) if row is None else ReplayCursor(row[0], row[1])


def erase_page(
    conn: sqlite3.Connection, tenant: TenantName, bus: str | None, after: int
) -> list[tuple[int, str, int, bytes, str]]:
    """The next page of the tenant's deliveries: id, bus, position, payload, content type."""
    rows = conn.execute(
        "SELECT d.id, t.bus, d.position, coalesce(b.payload, d.payload), d.content_type,"
        " d.archived, d.archived_kept"
        " FROM targets AS t JOIN deliveries AS d ON d.target = t.target"
        " LEFT JOIN bodies AS b ON b.id = d.body"
        " WHERE t.tenant = ? AND (? IS NULL OR t.bus = ?) AND d.id > ? ORDER BY d.id LIMIT ?",
        (tenant, bus, bus, after, ERASE_PAGE),
    ).fetchall()
    copies = schema.archived_bodies(conn, (r[5] for r in rows))
    return [
        (i, on_bus, position, payload if seq is None else copies[seq][:kept] + payload, kind)
        for i, on_bus, position, payload, kind, seq, kept in rows
    ]

"""Leasing in the embedded queue: due deliveries of the targets with work due, kept in memory.

A lease only says "a worker of this process has the delivery until then"; writing it would cost
a write of the delivery's row (and its index entry) for every attempt, twice with the ack.
Losing the leases (a crash, a restart) makes their deliveries due again at once: a redelivery.
Runs in the engine's writer thread, in a read-only transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

from stellwerk.clock import from_us
from stellwerk.seams import LeasedDelivery, TargetKey
from stellwerk.storage.queue.sqlite import schema
from stellwerk.storage.queue.sqlite.index import QueueIndex


def lease(
    conn: sqlite3.Connection,
    index: QueueIndex,
    now_us: int,
    until_us: int,
    limit: int,
    per_target_limits: Mapping[TargetKey, int],
) -> list[LeasedDelivery]:
    index.refresh(conn)
    caps: dict[int, int] = {}
    for key, cap in per_target_limits.items():
        target = index.target_ids.get(key)
        if target is not None:
            caps[target] = cap
    earliest = index.earliest
    due = sorted((t for t, e in earliest.items() if e <= now_us), key=earliest.__getitem__)
    out: list[LeasedDelivery] = []
    leases, counts = index.leases, index.lease_counts
    for target in due:
        room = min(limit - len(out), caps.get(target, limit))
        if room <= 0:
            if len(out) >= limit:
                break
            continue
        # Rows leased now are still in the ready index: read past them.
        ids = conn.execute(schema.DUE_IDS, (target, now_us, room + counts[target])).fetchall()
        chosen: list[int] = []
        with index.lease_lock:
            for (delivery_id,) in ids:
                held = leases.get(delivery_id)
                if held is not None and held[1] > now_us:
                    continue
                if held is None:
                    counts[target] += 1
                leases[delivery_id] = (target, until_us)
                chosen.append(delivery_id)
                if len(chosen) == room:
                    break
        if chosen:
            marks = ",".join("?" * len(chosen))
            rows = conn.execute(
                f"SELECT {schema.COLUMNS} FROM deliveries WHERE id IN ({marks})", chosen
            ).fetchall()
            by_id = {row[0]: row for row in rows}
            bodies = _shared_bodies(conn, rows)
            copies = schema.archived_bodies(conn, (row[-2] for row in rows))
            key = index.keys[target]
            out.extend(leased_from(key, by_id[i], bodies, copies) for i in chosen)
        first = conn.execute(schema.EARLIEST, (target,)).fetchone()[0]
        if first is None:
            del earliest[target]
        else:
            earliest[target] = first
    return out


def _shared_bodies(conn: sqlite3.Connection, rows: list[Any]) -> dict[int, bytes]:
    """The shared payloads the rows point at (their `body` column), by body id."""
    wanted = {row[-3] for row in rows if row[-3] is not None}
    if not wanted:
        return {}
    marks = ",".join("?" * len(wanted))
    return dict(conn.execute(f"SELECT id, payload FROM bodies WHERE id IN ({marks})", list(wanted)))


def leased_from(
    key: TargetKey, row: Any, bodies: dict[int, bytes], copies: dict[int, bytes]
) -> LeasedDelivery:
    (delivery_id, _, attempts, event_id, source, position, recorded_us, age_from_us,
     payload, content_type, ordering_key, last_error, body, archived, kept) = row  # fmt: skip
    if body is not None:
        payload = bodies[body]
    elif archived is not None:
        payload = copies[archived][:kept] + payload
    return LeasedDelivery(
        id=delivery_id,
        tenant=key.tenant,
        bus=key.bus,
        rule=key.rule,
        target_id=key.target_id,
        event_id=event_id,
        event_source=source,
        position=position,
        recorded_time=from_us(recorded_us),
        payload=payload,
        content_type=content_type,
        attempts=attempts,
        ordering_key=ordering_key,
        last_error=last_error,
        age_from=None if age_from_us == recorded_us else from_us(age_from_us),
    )

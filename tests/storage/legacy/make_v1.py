"""Makes `v1/`: deliveries.db and archives.db as Stellwerk wrote them before pipeline.db.

Run with the code of that time (main at af165f8, "storage restructure"), from a checkout of it:
`PYTHONPATH=<checkout>/src python tests/storage/legacy/make_v1.py tests/storage/legacy/v1`.
The files are committed; `test_pipeline_adopt.py` moves them into pipeline.db and reads them
through the stores. Through the public API only, so the files are what a running server wrote.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from stellwerk.refs import BusRef, TenantName
from stellwerk.seams import NewDelivery, StoredEvent
from stellwerk.storage.archive.sqlite import SqliteArchiveStore
from stellwerk.storage.queue.sqlite import SqliteDeliveryQueue

ACME_DEFAULT = BusRef(TenantName("acme"), "default")

ACME = TenantName("acme")

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SHARED = b'{"specversion":"1.0","id":"e3","data":"' + b"s" * 100 + b'"}'


def delivery(position: int, target_id: str = "t1", *, key: str | None = None) -> NewDelivery:
    payload = SHARED if position == 3 else f'{{"n":{position}}}'.encode()
    return NewDelivery(
        ACME, "default", "r1", target_id, f"e{position}", "/orders", position, T0, payload,
        "application/cloudevents+json", ordering_key=key,
    )  # fmt: skip


def stored(position: int, bus: str = "default") -> StoredEvent:
    body = f'{{"id":"e{position}","source":"/orders","type":"order.created"}}'.encode()
    at = T0 + timedelta(seconds=position)
    return StoredEvent(
        TenantName("acme"),
        bus,
        position,
        f"e{position}",
        "/orders",
        "order.created",
        None,
        at,
        body,
    )


async def main(out: Path) -> None:
    async with SqliteDeliveryQueue(out / "deliveries.db", clock=lambda: T0) as queue:
        await queue.route(ACME_DEFAULT, 2, [delivery(1), delivery(2)])
        # Position 3 goes to two targets: its payload is stored once, in `bodies`.
        await queue.route(ACME_DEFAULT, 3, [delivery(3, "t1"), delivery(3, "t2")])
        # An ordered group: 4 is ready, 5 waits behind it.
        await queue.route(ACME_DEFAULT, 5, [delivery(4, key="k"), delivery(5, key="k")])
        await queue.route(BusRef(TenantName("acme"), "audit"), 9, [])
        await queue.route_replay(
            TenantName("acme"), "backfill", 12, 4, [delivery(1, "t3")], after=0
        )
        leased = {(d.position, d.target_id): d for d in await queue.lease(T0, 100, 30)}
        await queue.ack(leased[(1, "t1")].id)
        await queue.dead_letter(leased[(2, "t1")].id, "HTTP 410")
        await queue.dead_letter(leased[(3, "t2")].id, "HTTP 404")
    async with SqliteArchiveStore(out / "archives.db") as archives:
        await archives.archive(ACME_DEFAULT, 4, [("a1", stored(p)) for p in (1, 2, 3, 4)])
        await archives.archive(ACME_DEFAULT, 6, [("a1", stored(5)), ("a2", stored(6))])
        await archives.archive(BusRef(TenantName("acme"), "audit"), 2, [("a3", stored(2, "audit"))])
        # The newest copy goes: its seq must not be handed out again.
        await archives.erase(["a3"], b'"e2"', lambda event: True)


if __name__ == "__main__":
    Path(sys.argv[1]).mkdir(parents=True, exist_ok=False)
    asyncio.run(main(Path(sys.argv[1])))

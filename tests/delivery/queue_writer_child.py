"""Child process of the two-process queue test: routes deliveries into pipeline.db in small runs
while the parent process leases and acks them from the same file.

Run as `python queue_writer_child.py PIPELINE_DB COUNT`; prints `done` at the end.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from tests.delivery.queue_support import ACME_DEFAULT, new_delivery

from stellwerk.refs import BusRef, TenantName
from stellwerk.storage.queue.sqlite import SqliteDeliveryQueue

RUN = 10


async def main(path: Path, count: int) -> None:
    async with SqliteDeliveryQueue(path) as queue:
        for start in range(1, count + 1, RUN):
            positions = range(start, min(count, start + RUN - 1) + 1)
            await queue.route(
                ACME_DEFAULT,
                positions[-1],
                [new_delivery(p) for p in positions],
            )
            # And some runs without deliveries on another bus, moved in memory.
            await queue.route(BusRef(TenantName("acme"), "quiet"), positions[-1], [])
    print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))

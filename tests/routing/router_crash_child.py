"""Child process of the router crash test: route a filled log in small batches, report progress.

Run as `python router_crash_child.py DATA_DIR`. After each batch it writes the bus's new cursor
on stdout; the parent kills it with SIGKILL somewhere in the middle.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from stellwerk.patterns import Matcher
from stellwerk.refs import BusRef, TenantName
from stellwerk.routing import Router, RouteTarget, RuleSet
from stellwerk.storage.eventlog.sqlite import SqliteEventLog
from stellwerk.storage.queue.sqlite import SqliteDeliveryQueue
from stellwerk.storage.sqlite import LOG_DIR, PIPELINE_FILE

BATCH = 10


def rules() -> RuleSet:
    matcher = Matcher()
    matcher.add("all", {"source": ["/crash"]})
    matcher.add("even", {"data": {"even": [True]}})
    return RuleSet(
        matcher, {"all": [RouteTarget("a1"), RouteTarget("a2")], "even": [RouteTarget("e")]}
    )


async def main(data_dir: Path) -> None:
    async with (
        SqliteEventLog(data_dir / LOG_DIR) as log,
        SqliteDeliveryQueue(data_dir / PIPELINE_FILE) as queue,
    ):
        ruleset = rules()
        router = Router(
            log,
            queue,
            lambda bus: ruleset,
            lambda: [BusRef(TenantName("acme"), "crash")],
            batch=BATCH,
        )
        while await router.route_batch(BusRef(TenantName("acme"), "crash")):
            sys.stdout.write(f"{await queue.cursor(BusRef(TenantName('acme'), 'crash'))}\n")
            sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))

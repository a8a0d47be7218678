"""Benchmark of the pipeline's embedded stores: routing, archiving and lease+ack, with the CPU and
the bytes written per event, beside the same phases on another source tree (`--baseline`).

Run `stellwerk bench pipeline [--events N] [--single N] [--baseline SRC] [--dir DIR]` (or
`.venv/bin/python bench/pipeline.py`). Every phase runs in a process of its own, so that its
CPU (`time.process_time`, all threads) and its bytes written (`/proc/self/io` `write_bytes`:
what reached the page cache as dirty pages, WAL and checkpoints included; `wchar` beside it, the
bytes of every write call) are its alone. Each but `log+route` starts from a log of N events of
~330 bytes (appended beforehand, not counted); each measures from the moment its stores are open
until the pipeline's stores are closed (their last checkpoint is counted):

- `log+route, no rules`: appends of 100 events, each routed at once (no rules): the log, its
  dedup record and the router's cursor together, per event (the log's close not counted).
- `log+route, no rules, 1 by 1`: the same with appends of one event.
- `route, no rules`: the router over the whole log (batches of 1,000): cursor moves only.
- `route, no rules, 1 by 1`: the same with a router batch of one event, as at a low rate of
  single events: each run of the router moves the cursor.
- `route, 1 rule`: every event matches one rule with one target: a delivery per event.
- `route, 1 rule, 1 by 1`.
- `archive`: every event copied into one archive, in runs of 1,000 with the archiver's cursor.
- `lease+ack`: N queued deliveries leased 100 at a time and acked, each ack a call of its own.
- `all at once`: route (1 rule), archive and lease+ack running together, as in the pipeline
  process; per event.

`--baseline SRC` runs every phase first with `PYTHONPATH=SRC` (another checkout's `src`, say
main's) and prints its figures above this tree's. The bytes per event are also given as a
multiple of the events' stored size (their bodies).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stellwerk.refs import BusRef, TenantName

PHASES = {
    "log+route": "log+route, no rules",
    "log+route-1": "log+route, no rules, 1 by 1",
    "route-none": "route, no rules",
    "route-none-1": "route, no rules, 1 by 1",
    "route-rule": "route, 1 rule",
    "route-rule-1": "route, 1 rule, 1 by 1",
    "archive": "archive",
    "lease-ack": "lease+ack",
    "all": "all at once",
}
TENANT, BUS = TenantName("bench"), "default"
PAD = "p" * 150


def _nothing() -> None:
    return None


def _io() -> dict[str, int]:
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return {"write_bytes": int(fields["write_bytes"]), "wchar": int(fields["wchar"])}


@dataclass
class Stores:
    log: Any
    queue: Any
    archives: Any


@asynccontextmanager
async def _stores(
    directory: Path, opened: Callable[[], None], closed: Callable[[], None]
) -> AsyncIterator[Stores]:
    """The log and the pipeline's stores as this tree builds them: on one engine in pipeline.db
    where there is one, else each on its file (the tree before it). `opened` is called once
    they are open, `closed` once the pipeline's stores are closed (their last checkpoint done)
    and before the log is."""
    from stellwerk.storage.eventlog.sqlite import SqliteEventLog
    from stellwerk.storage.sqlite import LOG_DIR

    async with SqliteEventLog(directory / LOG_DIR) as log:
        try:
            from stellwerk.storage.pipeline import pipeline_stores  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            from stellwerk.storage.archive.sqlite import SqliteArchiveStore
            from stellwerk.storage.queue.sqlite import SqliteDeliveryQueue
            from stellwerk.storage.sqlite import ARCHIVES_FILE, DELIVERIES_FILE

            queue = SqliteDeliveryQueue(directory / DELIVERIES_FILE)
            archives = SqliteArchiveStore(directory / ARCHIVES_FILE)
        else:
            both = pipeline_stores(directory)
            queue, archives = both.queue, both.archives
        async with queue, archives:
            opened()
            yield Stores(log, queue, archives)
        closed()


def _events(start: int, count: int) -> list[Any]:
    from stellwerk.events import CloudEvent
    from stellwerk.seams import NewEvent

    return [
        NewEvent.of(
            TENANT,
            BUS,
            CloudEvent(
                id=f"e{n:08d}",
                source="/bench/orders",
                type="order.created",
                subject=f"orders/{n}",
                data={"n": n, "total": n * 3.25, "pad": PAD},
            ),
        )
        for n in range(start, start + count)
    ]


async def _fill(directory: Path, events: int) -> int:
    """N events in the log; returns the bytes of their bodies."""
    from stellwerk.storage.eventlog.sqlite import SqliteEventLog
    from stellwerk.storage.sqlite import LOG_DIR

    stored = 0
    async with SqliteEventLog(directory / LOG_DIR) as log:
        for start in range(0, events, 100):
            batch = _events(start, min(100, events - start))
            await log.append(batch)
            stored += sum(len(e.body) for e in batch)
    return stored


async def _ingest_and_route(stores: Stores, events: int, per_append: int) -> int:
    """Append `per_append` events at a time and route each append at once, as the router
    follows a log that grows; returns the bytes of the events' bodies."""
    router = _router(stores, 0, 1000)
    stored = 0
    for start in range(0, events, per_append):
        batch = _events(start, min(per_append, events - start))
        await stores.log.append(batch)
        stored += sum(len(e.body) for e in batch)
        await router.route_batch(BusRef(TENANT, BUS))
    return stored


def _router(stores: Stores, rules: int, batch: int) -> Any:
    from stellwerk.patterns import Matcher
    from stellwerk.routing import Router, RouteTarget, RuleSet

    matcher = Matcher()
    targets: dict[str, list[Any]] = {}
    for number in range(rules):
        matcher.add(f"r{number}", {"source": ["/bench/orders"]})
        targets[f"r{number}"] = [RouteTarget("t")]
    rule_set = RuleSet(matcher, targets)
    return Router(
        stores.log, stores.queue, lambda bus: rule_set, lambda: [BusRef(TENANT, BUS)], batch=batch
    )


async def _archive_all(stores: Stores, batch: int) -> None:
    cursor = 0
    while events := await stores.log.read(BusRef(TENANT, BUS), after=cursor, limit=batch):
        cursor = events[-1].position
        await stores.archives.archive(BusRef(TENANT, BUS), cursor, [("a1", e) for e in events])


async def _lease_and_ack(stores: Stores, expected: int, routing: asyncio.Task[Any] | None) -> None:
    done = 0
    while done < expected:
        leased = await stores.queue.lease(datetime.now(UTC), 100, 60)
        if not leased:
            if routing is not None and routing.done():
                routing.result()
            await asyncio.sleep(0.001)  # the router has not caught up yet
            continue
        await asyncio.gather(*(stores.queue.ack(d.id) for d in leased))
        done += len(leased)


async def _phase(name: str, directory: Path, events: int) -> dict[str, Any]:
    stored = 0 if name.startswith("log+") else await _fill(directory, events)
    if name == "lease-ack":
        async with _stores(directory, _nothing, _nothing) as stores:  # to lease, not counted
            await _router(stores, 1, 1000).run(burst=True)
    marks: list[tuple[dict[str, int], float, float]] = []

    def mark() -> None:
        marks.append((_io(), time.process_time(), time.perf_counter()))

    async with _stores(directory, mark, mark) as stores:
        if name.startswith("log+"):
            stored = await _ingest_and_route(stores, events, 1 if name.endswith("-1") else 100)
        elif name.startswith("route"):
            batch = 1 if name.endswith("-1") else 1000
            await _router(stores, 0 if "none" in name else 1, batch).run(burst=True)
        elif name == "archive":
            await _archive_all(stores, 1000)
        elif name == "lease-ack":
            await _lease_and_ack(stores, events, None)
        else:
            routing = asyncio.ensure_future(_router(stores, 1, 100).run(burst=True))
            await asyncio.gather(_archive_all(stores, 100), _lease_and_ack(stores, events, routing))
            await routing
    (before, cpu, started), (after, cpu_after, ended) = marks
    return {
        "events": events,
        "seconds": ended - started,
        "cpu": cpu_after - cpu,
        "write_bytes": after["write_bytes"] - before["write_bytes"],
        "wchar": after["wchar"] - before["wchar"],
        "stored": stored / events,
    }


def _child(name: str, directory: Path, events: int, src: str | None) -> dict[str, Any]:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = src
    command = [sys.executable, __file__, "--phase", name, "--dir", str(directory)]
    out = subprocess.run(
        [*command, "--events", str(events)], env=env, capture_output=True, text=True, check=True
    ).stdout
    result: dict[str, Any] = json.loads(out.splitlines()[-1])
    return result


def _line(label: str, tree: str, r: dict[str, Any]) -> str:
    n = r["events"]
    per = r["write_bytes"] / n
    return (
        f"{label:<28} {tree:<8} {n:>7,} {n / r['seconds']:>10,.0f}/s {r['cpu'] / n * 1e6:>8.1f} µs"
        f" {per:>9,.0f} B {per / r['stored']:>6.2f}x {r['wchar'] / n:>9,.0f} B"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=20_000, help="events per phase")
    parser.add_argument("--single", type=int, default=2_000, help="events for the 1-by-1 phases")
    parser.add_argument("--baseline", default=None, help="another tree's src/ to run beside")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the files")
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase is not None:  # in the child
        print(json.dumps(asyncio.run(_phase(args.phase, args.dir, args.events))))
        return 0
    trees = [("baseline", args.baseline)] if args.baseline else []
    trees.append(("this", None))
    print(
        f"{'phase':<28} {'tree':<8} {'events':>7} {'rate':>12} {'CPU/ev':>11}"
        f" {'written/ev':>11} {'/stored':>7} {'wchar/ev':>11}"
    )
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for name, label in PHASES.items():
            events = args.single if name.endswith("-1") else args.events
            for tree, src in trees:
                directory = Path(tmp) / f"{name}-{tree}"
                directory.mkdir()
                print(_line(label, tree, _child(name, directory, events, src)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark of erasure in the embedded log: how long it takes, and what appends wait meanwhile.

Run `stellwerk bench erasure [--events N] [--dir DIR]` (or `.venv/bin/python bench/erasure.py`).
On a fresh log (WAL, `synchronous=FULL`) of N events (~600 B CloudEvents JSON, 2,000 users,
half of the events on the `pro` plan), through `SqliteEventLog.erase` with the erasure criteria
of `stellwerk.erasure.criterion`:

- `one user`: erase `data.userId == "user-7"` (N / 2,000 events): the usual request. Its needle
  lets the scan skip segments without that user.
- `half`: erase `data.plan == "pro"` (N / 2 events): every segment is decoded and rewritten.
- `read all`: the baseline, one pass of `read` over the whole bus in pages of 1,000.

While each erasure runs, a probe appends one event every 5 ms and records how long each append
took; the figures beside it are the same probe with nothing else running.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from stellwerk.erasure.criterion import Criterion, parse
from stellwerk.events import CloudEvent
from stellwerk.refs import BusRef, TenantName
from stellwerk.seams import ErasedEvent, NewEvent
from stellwerk.storage.eventlog.sqlite import SqliteEventLog
from stellwerk.storage.sqlite import LOG_DIR

USERS = 2_000
PAD = "x" * 400


def _events(start: int, count: int) -> list[NewEvent]:
    return [
        NewEvent.of(
            TenantName("bench"),
            "default",
            CloudEvent(
                id=f"e{n}",
                source="/bench",
                type="user.action",
                subject=f"account-{n % USERS}",
                data={
                    "userId": f"user-{n % USERS}",
                    "plan": "pro" if n % 2 else "free",
                    "pad": PAD,
                },
            ),
        )
        for n in range(start, start + count)
    ]


async def _probe(log: SqliteEventLog, stop: asyncio.Event, tag: str) -> list[float]:
    """Append one event every 5 ms until `stop`; the seconds each append took."""
    waits: list[float] = []
    n = 0
    while not stop.is_set():
        started = time.perf_counter()
        await log.append(
            [
                NewEvent.of(
                    TenantName("bench"), "probe", CloudEvent(id=f"{tag}{n}", source="/p", type="p")
                )
            ]
        )
        waits.append(time.perf_counter() - started)
        n += 1
        await asyncio.sleep(0.005)
    return waits


def _waits(waits: list[float]) -> str:
    ordered = sorted(waits)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"append p50 {statistics.median(ordered) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms,"
        f" max {ordered[-1] * 1000:.1f} ms ({len(ordered)} appends)"
    )


async def _timed(
    log: SqliteEventLog, tag: str, work: Coroutine[Any, Any, object]
) -> tuple[float, list[float]]:
    stop = asyncio.Event()
    probe = asyncio.create_task(_probe(log, stop, tag))
    started = time.perf_counter()
    await work
    elapsed = time.perf_counter() - started
    stop.set()
    return elapsed, await probe


async def _read_all(log: SqliteEventLog) -> int:
    seen, after = 0, 0
    while page := await log.read(BusRef(TenantName("bench"), "default"), after=after, limit=1000):
        seen += len(page)
        after = page[-1].position
    return seen


async def run(events: int, directory: Path) -> None:
    async with SqliteEventLog(directory / LOG_DIR) as log:
        started = time.perf_counter()
        for start in range(0, events, 1000):
            await log.append(_events(start, min(1000, events - start)))
        print(f"{events} events appended in {time.perf_counter() - started:.1f} s")

        idle_stop = asyncio.Event()
        idle = asyncio.create_task(_probe(log, idle_stop, "idle"))
        await asyncio.sleep(2)
        idle_stop.set()
        print(f"{'nothing else':<12} {_waits(await idle)}")

        seconds, waits = await _timed(log, "read", _read_all(log))
        print(
            f"{'read all':<12} {seconds:6.2f} s  {events / seconds:>9,.0f} events/s"
            f"  {_waits(waits)}"
        )

        for label, criterion in (
            ("one user", parse(None, "data.userId", "user-7")),
            ("half", parse(None, "data.plan", "pro")),
        ):
            erased: list[ErasedEvent] = []

            async def erase(
                criterion: Criterion = criterion, into: list[ErasedEvent] = erased
            ) -> None:
                into.extend(
                    await log.erase(
                        TenantName("bench"), None, criterion.needle, criterion.matches_stored
                    )
                )

            seconds, waits = await _timed(log, label.replace(" ", ""), erase())
            print(
                f"{label:<12} {seconds:6.2f} s  {events / seconds:>9,.0f} events/s looked at,"
                f" {len(erased)} erased  {_waits(waits)}"
            )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="stellwerk bench erasure")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        asyncio.run(run(args.events, args.dir))
        return 0
    with tempfile.TemporaryDirectory(prefix="stellwerk-bench-erasure-") as directory:
        asyncio.run(run(args.events, Path(directory)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Benchmark of routing and delivery on the embedded stores, beside raw SQLite inserts.

Run `.venv/bin/python bench/delivery.py [--events N] [--rules R] [--deliveries M] [--dir DIR]`
(or `stellwerk bench delivery`). Phases, each on fresh files in WAL mode with `synchronous=FULL`:

- `raw sqlite3 insert`: `executemany` of delivery rows (~1 KB payload) into a table of the same
  shape, 1,000 rows per transaction: what the disk and SQLite give without any queue logic.
- `router`: N events (~1 KB, the pattern benchmark's generator) already in the log; the router
  reads them in batches of 1,000, matches each against R rules (the pattern benchmark's
  *realistic* mix, one target per rule) and stores the deliveries with the cursor. Events/s and
  deliveries/s.
- `worker, no-op target`: M deliveries queued; a worker in burst mode delivers them all to a
  target that returns at once (lease, one task per delivery, ack with group commit).
- `worker, no history`: the same, with the worker recording no delivery history, in the same run
  (`--pairs` runs of each, alternating; `--history-only` runs nothing else): what recording
  every attempt costs (CPU µs per delivery, all threads, medians compared, and the history's
  bytes per attempt on disk).
- `queue.ack_many`: the queue alone, every delivery leased, then acked 256 per call with its
  attempt or without (`--pairs` of each): the store's share of the history's cost.
- `worker, + hanging target`: the same M deliveries to the healthy target while as many go to a
  second target that never answers (its 16 slots stay full); the healthy target's rate should stay
  within 10% of the previous phase.
- `lease`: leases of one delivery per call, first with an empty queue around it, then beside a
  backlog of 100,000 due deliveries of a target with no free slots: the backlog should cost
  nothing (leases visit only targets with due work and free slots).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec

from stellwerk.cli import load_file
from stellwerk.clock import to_us
from stellwerk.delivery.model import Delivered, Outcome
from stellwerk.delivery.worker import DeliveryWorker, TargetBinding
from stellwerk.patterns import Matcher
from stellwerk.refs import BusRef, TenantName
from stellwerk.routing import Router, RouteTarget, RuleSet
from stellwerk.seams import Attempt, Delivery, LeasedDelivery, NewDelivery, NewEvent, TargetKey
from stellwerk.storage.eventlog.sqlite import SqliteEventLog
from stellwerk.storage.queue.sqlite import SqliteDeliveryQueue
from stellwerk.storage.sqlite import LOG_DIR, PIPELINE_FILE

PAYLOAD = b'{"pad":"' + b"x" * 1000 + b'"}'
TENANT, BUS = TenantName("bench"), "default"


def _pattern_bench() -> ModuleType:
    """The pattern benchmark's event and rule generators, so both benchmarks see the same bus."""
    return load_file(Path(__file__).with_name("patterns.py"), "stellwerk_bench_patterns")


def row(name: str, count: int, seconds: float, unit: str = "/s", extra: str = "") -> str:
    return f"{name:<34} {count:>9,} {count / seconds:>12,.0f} {unit:<14} {extra}"


def raw_inserts(path: Path, rows: int) -> str:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(
        "CREATE TABLE d (id INTEGER PRIMARY KEY, target INTEGER, state INTEGER, due_us INTEGER,"
        " event_id TEXT, event_source TEXT, position INTEGER, recorded_us INTEGER,"
        " payload BLOB, content_type TEXT)"
    )
    started = time.perf_counter()
    for start in range(0, rows, 1000):
        batch = [
            (n % 300, 0, n, f"e{n}", "/bench", n, n, PAYLOAD, "application/cloudevents+json")
            for n in range(start, min(rows, start + 1000))
        ]
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO d (target, state, due_us, event_id, event_source, position,"
            " recorded_us, payload, content_type) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            batch,
        )
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return row("raw sqlite3 insert, 1,000/txn", rows, elapsed, "rows/s")


async def route_phase(directory: Path, events: int, rules: int, seed: int) -> str:
    patterns = _pattern_bench()
    rng = random.Random(seed)
    matcher = Matcher()
    targets: dict[str, list[RouteTarget]] = {}
    for number in range(rules):
        matcher.add(f"rule-{number}", patterns.make_realistic_rule(rng, number))
        targets[f"rule-{number}"] = [RouteTarget("t")]
    rule_set = RuleSet(matcher, targets)
    async with (
        SqliteEventLog(directory / LOG_DIR) as log,
        SqliteDeliveryQueue(directory / PIPELINE_FILE) as queue,
    ):
        for start in range(0, events, 1000):
            batch = []
            for number in range(start, min(events, start + 1000)):
                event: dict[str, Any] = patterns.make_event(rng, number)
                body = msgspec.json.encode(event)
                batch.append(
                    NewEvent(
                        TENANT,
                        BUS,
                        str(event["id"]),
                        str(event["source"]),
                        str(event["type"]),
                        event.get("subject"),
                        body,
                    )
                )
            await log.append(batch)
        routed = 0

        class Count:
            def on_routed(self, tenant: str, bus: str, events: int, deliveries: int) -> None:
                nonlocal routed
                routed += deliveries

            def on_matched(self, tenant: str, bus: str, rules: Any) -> None:
                pass

        router = Router(
            log, queue, lambda bus: rule_set, lambda: [BusRef(TENANT, BUS)], hooks=Count()
        )
        started = time.perf_counter()
        await router.run(burst=True)
        elapsed = time.perf_counter() - started
        assert await queue.cursor(BusRef(TENANT, BUS)) == await log.last_position(
            BusRef(TENANT, BUS)
        )
    extra = f"{routed / events:.1f} deliveries/event, {routed / elapsed:,.0f} deliveries/s"
    return row(f"router, {rules} rules", events, elapsed, "events/s", extra)


class NoOpTarget:
    def __init__(self, expect: int) -> None:
        self.count = 0
        self.expect = expect
        self.done = asyncio.Event()

    async def deliver(self, delivery: Delivery) -> Outcome:
        self.count += 1
        if self.count >= self.expect:
            self.done.set()
        return Delivered()

    async def close(self) -> None:
        pass


class HangingTarget:
    async def deliver(self, delivery: Delivery) -> Outcome:
        await asyncio.Event().wait()
        raise AssertionError("never answers")

    async def close(self) -> None:
        pass


def _event_id(position: int) -> str:
    return str(uuid.UUID(int=random.Random(position).getrandbits(128), version=4))


async def _fill(queue: SqliteDeliveryQueue, count: int, target_ids: list[str]) -> float:
    now = datetime.now(UTC)
    started = time.perf_counter()
    for start in range(0, count, 1000):
        positions = range(start + 1, min(count, start + 1000) + 1)
        # Event ids as most producers make them (UUIDs), random rather than in order: what the
        # history's event index sees.
        batch = [
            NewDelivery(TENANT, BUS, "r", t, _event_id(p), "/bench", p, now, PAYLOAD, "a/b")
            for p in positions
            for t in target_ids
        ]
        await queue.route(BusRef(TENANT, BUS), positions[-1], batch)
    return time.perf_counter() - started


async def worker_phase(
    directory: Path, deliveries: int, hanging: bool, history: bool = True
) -> list[str]:
    lines = []
    async with SqliteDeliveryQueue(directory / PIPELINE_FILE) as queue:
        ids = ["healthy", "hanging"] if hanging else ["healthy"]
        fill = await _fill(queue, deliveries, ids)
        if not hanging:
            lines.append(row("queue.route, 1,000/call", deliveries, fill, "deliveries/s"))
        healthy = NoOpTarget(deliveries)
        bindings = {
            "healthy": TargetBinding(healthy, concurrency=256),
            "hanging": TargetBinding(HangingTarget(), concurrency=16),
        }
        worker = DeliveryWorker(queue, lambda t, b, r, i: bindings.get(i), history=history)
        # Every run starts with the collector's generations empty: a full collection (tens of ms
        # of the whole heap) falling into one run and not the next was a swing of 2-3 us per
        # delivery between runs of the same code.
        gc.collect()
        threads = _thread_cpu()
        groups = queue.engine.groups
        cpu = time.process_time()
        started = time.perf_counter()
        running = asyncio.create_task(worker.run())
        await healthy.done.wait()
        elapsed = time.perf_counter() - started
        await worker.stop(grace=0)
        await running
        cpu_us = (time.process_time() - cpu) * 1e6 / deliveries
        groups = queue.engine.groups - groups
        spent = {
            name: (ns - threads.get(name, 0)) / 1000 / deliveries
            for name, ns in _thread_cpu().items()
        }
        name = "worker, no-op + hanging target" if hanging else "worker, no-op target"
        if not history:
            name = "worker, no-op, no history"
        extra = f"{cpu_us:.1f} CPU us/delivery"
        if history:
            extra += f", {_history_bytes(queue.path) / deliveries:.0f} B/attempt"
        lines.append(row(name, deliveries, elapsed, "deliveries/s", extra))
        # Where the CPU went: the event loop's thread (the worker), the engine's writer (the
        # acks and the attempts), the rest (readers, the checkpointer); and the commits made.
        loop_us = spent.get(threading.main_thread().name, 0.0)
        writer_us = sum(us for name, us in spent.items() if name.endswith("-writer"))
        rest_us = sum(spent.values()) - loop_us - writer_us
        lines.append(
            f"{'':<34} per delivery: loop {loop_us:.1f}, writer {writer_us:.1f},"
            f" other threads {rest_us:.1f} CPU us; {groups:,} writer groups"
        )
    return lines


def _thread_cpu() -> dict[str, int]:
    """CPU time (ns) of each live thread of this process, by name (threads of one name added)."""
    spent: dict[str, int] = {}
    for thread in threading.enumerate():
        if thread.ident is None:
            continue
        try:
            ns = time.clock_gettime_ns(time.pthread_getcpuclockid(thread.ident))
        except OSError:  # it ended in between
            continue
        spent[thread.name] = spent.get(thread.name, 0) + ns
    return spent


def _delivered(d: LeasedDelivery, started: datetime) -> Attempt:
    return Attempt(
        d.tenant, d.bus, d.rule, d.target_id, d.event_id, d.position, 1, to_us(started), 40,
        "delivered", 200, None, "ok",
    )  # fmt: skip


async def ack_phase(directory: Path, deliveries: int, history: bool) -> str:
    """The queue alone: lease every delivery, then ack 256 per call (the worker's batch), with
    their attempts or without; CPU of all threads (the writer's included) per delivery."""
    async with SqliteDeliveryQueue(directory / PIPELINE_FILE) as queue:
        await _fill(queue, deliveries, ["healthy"])
        now = datetime.now(UTC)
        leased = []
        while batch := await queue.lease(now, 1000, 600):
            leased.extend(batch)
        assert len(leased) == deliveries
        attempts = [_delivered(d, now) for d in leased]
        gc.collect()
        cpu = time.process_time()
        started = time.perf_counter()
        for start in range(0, deliveries, 256):
            chunk = leased[start : start + 256]
            await queue.ack_many(
                [d.id for d in chunk], attempts[start : start + 256] if history else ()
            )
        elapsed = time.perf_counter() - started
        cpu_us = (time.process_time() - cpu) * 1e6 / deliveries
    name = "queue.ack_many 256, " + ("with attempts" if history else "no attempts")
    return row(name, deliveries, elapsed, "acks/s", f"{cpu_us:.1f} CPU us/delivery")


def _history_bytes(path: Path) -> int:
    """What the history's table and indexes take in the file (after a checkpoint)."""
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        try:
            (size,) = conn.execute(
                "SELECT sum(pgsize) FROM dbstat WHERE name LIKE 'attempt%'"
            ).fetchone()
        except sqlite3.OperationalError:  # an SQLite built without dbstat
            return 0
    return int(size or 0)


async def lease_phase(directory: Path, backlog: int, calls: int = 2000) -> str:
    async with SqliteDeliveryQueue(directory / PIPELINE_FILE) as queue:
        if backlog:
            await _fill(queue, backlog, ["backlog"])
        now = datetime.now(UTC)
        batch = [
            NewDelivery(TENANT, BUS, "r", "other", f"o{p}", "/bench", p, now, PAYLOAD, "a/b")
            for p in range(backlog + 1, backlog + calls + 1)
        ]
        await queue.route(BusRef(TENANT, BUS), backlog + calls, batch)
        full = {TargetKey(TENANT, BUS, "r", "backlog"): 0}
        started = time.perf_counter()
        for _ in range(calls):
            (leased,) = await queue.lease(datetime.now(UTC), 1, 60, full)
            assert leased.target_id == "other"
        elapsed = time.perf_counter() - started
    return row(f"lease 1, beside {backlog:,} backlog", calls, elapsed, "leases/s")


async def run(args: argparse.Namespace, directory: Path) -> None:
    print(f"{'phase':<34} {'count':>9} {'rate':>12} unit")
    if not args.history_only:
        print(raw_inserts(directory / "raw.db", args.deliveries))
        (directory / "route").mkdir()
        print(await route_phase(directory / "route", args.events, args.rules, args.seed))
    # With and without history, alternating, so that a loaded machine skews both alike.
    cpu: dict[bool, list[float]] = {True: [], False: []}
    rates: dict[bool, list[float]] = {True: [], False: []}
    for run_no in range(2 * args.pairs):
        history = run_no % 2 == 0
        where = directory / f"history{run_no}"
        where.mkdir()
        for line in await worker_phase(where, args.deliveries, False, history):
            if "CPU us/delivery" in line:
                before, after = line.split(" deliveries/s")
                cpu[history].append(float(after.split()[0]))
                rates[history].append(float(before.split()[-1].replace(",", "")))
            print(line)
    on, off = _median(cpu[True]), _median(cpu[False])
    print(
        f"history costs {on - off:.1f} CPU us/delivery (median {on:.1f} with, {off:.1f}"
        f" without): {100 * (on - off) / on:.0f}% of the worker's CPU with it"
    )
    fast, slow = _median(rates[False]), _median(rates[True])
    print(
        f"median rates {slow:,.0f} with history, {fast:,.0f} without: history costs"
        f" {100 * (fast - slow) / fast:.1f}% of the delivery rate; at the CPU medians,"
        f" {100 * (1 - off / on):.1f}%"
    )
    # The store's part alone, without the worker's noise.
    acks: dict[bool, list[float]] = {True: [], False: []}
    for run_no in range(2 * args.pairs):
        history = run_no % 2 == 0
        where = directory / f"acks{run_no}"
        where.mkdir()
        line = await ack_phase(where, args.deliveries, history)
        acks[history].append(float(line.split("acks/s")[1].split()[0]))
        print(line)
    on, off = _median(acks[True]), _median(acks[False])
    print(f"writing the attempts costs {on - off:.1f} CPU us/delivery (medians of the ack runs)")
    if args.history_only:
        return
    (directory / "hanging").mkdir()
    for line in await worker_phase(directory / "hanging", args.deliveries, True):
        print(line)
    for backlog in (0, args.backlog):
        (directory / f"lease{backlog}").mkdir()
        print(await lease_phase(directory / f"lease{backlog}", backlog))


def _median(values: list[float]) -> float:
    return statistics.median(values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=20_000, help="events to route")
    parser.add_argument("--rules", type=int, default=300, help="rules on the bus")
    parser.add_argument("--deliveries", type=int, default=20_000, help="deliveries to deliver")
    parser.add_argument("--backlog", type=int, default=100_000, help="for the lease phase")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pairs", type=int, default=2, help="runs with and without history")
    parser.add_argument(
        "--history-only", action="store_true", help="only the runs with and without history"
    )
    parser.add_argument("--dir", type=Path, default=None, help="where to put the files")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        asyncio.run(run(args, Path(tmp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

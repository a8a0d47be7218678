"""The delivery client, alone and in the worker, with each transport: `stellwerk bench client`.

A bare asyncio HTTP/1.1 receiver (`bench/e2e.py`'s, in a process of its own) answers every POST
with 204. Each phase runs with both delivery transports in turn, aiohttp (the reference, the
same-run baseline) and libcurl (the default), `--rounds` times, alternating:

- client alone: `--requests` POSTs of a ~330-byte event with Standard Webhooks headers through
  the transport (`SessionPool.transport(...).post`, what `HttpTarget` calls), `--concurrency`
  at a time, as fast as the receiver answers;
- worker end to end: `--deliveries` deliveries in an embedded (SQLite) delivery queue, delivered
  by a `DeliveryWorker` through an `HttpTarget` with concurrency `--concurrency`: lease, sign,
  POST, ack.

Beside each rate: this process's CPU per request (all its threads, the queue's writer too) and,
for the worker, bytes written to disk per delivery. The figure to compare is CPU per request,
which neighbours on a shared machine move least. `--history` runs only the worker end to end
(libcurl), with delivery history and without, alternating: what history costs against a real
HTTP target. Target: libcurl at most half of aiohttp's CPU
per request in the client-alone phase. Runs on uvloop, as `stellwerk serve` does
(`--loop asyncio` for the standard loop).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import uvloop
from yarl import URL

from stellwerk.cli.bench import load_file
from stellwerk.delivery.model import Delivered, Outcome
from stellwerk.delivery.targets import AddressPolicy, HttpClient, HttpTarget, SessionPool
from stellwerk.delivery.targets.webhooks import WebhookSigner, generate_secret
from stellwerk.delivery.worker import DeliveryWorker, TargetBinding
from stellwerk.seams import Delivery
from stellwerk.storage.queue.sqlite import SqliteDeliveryQueue
from stellwerk.storage.sqlite import DELIVERIES_FILE

CLIENTS: tuple[HttpClient, ...] = ("aiohttp", "curl")
HERE = Path(__file__).parent
SECRET = generate_secret()
EVENT = msgspec.json.encode(
    {
        "specversion": "1.0",
        "id": "00000000-0000-4000-8000-000000000000",
        "source": "bench/client",
        "type": "bench.client",
        "time": "2026-01-01T00:00:00Z",
        "datacontenttype": "application/json",
        "data": {"order": "x" * 150, "total": 42},
    }
)


class Figure(NamedTuple):
    client: HttpClient
    requests: int
    seconds: float
    cpu: float
    written: int

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_us(self) -> float:
        return self.cpu * 1e6 / self.requests


def written_bytes() -> int:
    """Bytes this process has caused to be written to disk so far (/proc/self/io), else 0."""
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


async def measured(client: HttpClient, count: int, work: Coroutine[Any, Any, None]) -> Figure:
    cpu, wall, disk = time.process_time(), time.perf_counter(), written_bytes()
    await work
    return Figure(
        client,
        count,
        time.perf_counter() - wall,
        time.process_time() - cpu,
        written_bytes() - disk,
    )


async def client_alone(client: HttpClient, url: str, requests: int, concurrency: int) -> Figure:
    pool = SessionPool(client=client)
    try:
        transport = pool.transport(AddressPolicy(allow_private=True))
        target = URL(url)
        signer = WebhookSigner(SECRET)
        headers = signer.headers("00000000-0000-4000-8000-000000000000", int(time.time()), EVENT)
        headers["Content-Type"] = "application/cloudevents+json"
        for _ in range(concurrency):  # connections open before the clock starts
            await transport.post(target, EVENT, headers, 30.0)
        left = requests

        async def sender() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                answer = await transport.post(target, EVENT, headers, 30.0)
                if answer.status != 204:
                    raise SystemExit(f"{client}: the receiver answered {answer.status}")

        async def all_senders() -> None:
            await asyncio.gather(*(sender() for _ in range(concurrency)))

        return await measured(client, requests, all_senders())
    finally:
        await pool.close()


class Counting:
    """Passes deliveries to the HTTP target and says when `expect` of them were delivered."""

    def __init__(self, target: HttpTarget, expect: int) -> None:
        self.target = target
        self.expect = expect
        self.delivered = 0
        self.problems: list[str] = []
        self.done = asyncio.Event()

    async def deliver(self, delivery: Delivery) -> Outcome:
        outcome = await self.target.deliver(delivery)
        if isinstance(outcome, Delivered):
            self.delivered += 1
            if self.delivered >= self.expect:
                self.done.set()
        else:
            self.problems.append(str(outcome))
        return outcome

    async def close(self) -> None:
        await self.target.close()


async def worker_end_to_end(
    client: HttpClient,
    url: str,
    deliveries: int,
    concurrency: int,
    directory: Path,
    *,
    history: bool = True,
) -> Figure:
    fill = load_file(HERE / "delivery.py", "stellwerk_bench_delivery")._fill
    pool = SessionPool(client=client)
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        try:
            async with SqliteDeliveryQueue(Path(tmp) / DELIVERIES_FILE) as queue:
                await fill(queue, deliveries, ["t"])
                http = HttpTarget(
                    url,
                    session_pool=pool,
                    secret=SECRET,
                    concurrency=concurrency,
                    allow_private=True,
                )
                counting = Counting(http, deliveries)
                binding = TargetBinding(counting, concurrency=concurrency)
                worker = DeliveryWorker(
                    queue, lambda tenant, bus, rule, target: binding, history=history
                )

                async def deliver_all() -> None:
                    running = asyncio.create_task(worker.run())
                    await counting.done.wait()
                    await worker.stop(grace=0)
                    await running

                figure = await measured(client, deliveries, deliver_all())
                if counting.problems:
                    raise SystemExit(f"{client}: {counting.problems[0]}")
                return figure
        finally:
            await pool.close()


def take(receiver: str) -> None:
    """Empty the receiver's record of arrivals, so it does not grow over the rounds."""
    with urllib.request.urlopen(receiver.replace("/hook", "/take"), timeout=30) as answer:  # noqa: S310
        answer.read()


def show(title: str, figures: list[Figure], *, disk: bool) -> dict[HttpClient, float]:
    print(f"\n{title}")
    print(
        f"  {'client':<8} {'count':>8} {'req/s':>9} {'CPU us/req':>11}"
        + ("  bytes/req" if disk else "")
    )
    for figure in figures:
        line = f"  {figure.client:<8} {figure.requests:>8,} {figure.rate:>9,.0f}"
        line += f" {figure.cpu_us:>11.1f}"
        if disk:
            line += f"  {figure.written / figure.requests:>9,.0f}"
        print(line)
    medians: dict[HttpClient, float] = {}
    for client in CLIENTS:
        mine = [f for f in figures if f.client == client]
        medians[client] = statistics.median(f.cpu_us for f in mine)
        rates = statistics.median(f.rate for f in mine)
        print(f"  median {client:<8} {rates:>9,.0f} req/s {medians[client]:>8.1f} us CPU/req")
    ratio = medians["curl"] / medians["aiohttp"]
    print(f"  curl / aiohttp CPU per request: {ratio:.2f}")
    return medians


async def history_cost(args: argparse.Namespace, receiver: str) -> int:
    """Worker end to end with libcurl, with delivery history and without, alternating."""
    figures: dict[bool, list[Figure]] = {True: [], False: []}
    for _ in range(args.rounds):
        for history in (True, False):
            figure = await worker_end_to_end(
                "curl", receiver, args.deliveries, args.concurrency, args.dir, history=history
            )
            figures[history].append(figure)
            take(receiver)
            print(
                f"  {'with' if history else 'without':<8} history {figure.rate:>9,.0f} req/s"
                f" {figure.cpu_us:>8.1f} us CPU/req"
            )
    on = statistics.median(f.cpu_us for f in figures[True])
    off = statistics.median(f.cpu_us for f in figures[False])
    rate_on = statistics.median(f.rate for f in figures[True])
    rate_off = statistics.median(f.rate for f in figures[False])
    print(
        f"history costs {on - off:.1f} us CPU per delivery ({100 * (on - off) / on:.0f}% of"
        f" the worker's CPU with it); median rates {rate_on:,.0f} with, {rate_off:,.0f} without"
    )
    return 0


async def measure(args: argparse.Namespace, receiver: str) -> int:
    if args.history:
        return await history_cost(args, receiver)
    alone: list[Figure] = []
    worker: list[Figure] = []
    for _ in range(args.rounds):
        for client in CLIENTS:
            alone.append(await client_alone(client, receiver, args.requests, args.concurrency))
            take(receiver)
    for _ in range(args.rounds):
        for client in CLIENTS:
            worker.append(
                await worker_end_to_end(
                    client, receiver, args.deliveries, args.concurrency, args.dir
                )
            )
            take(receiver)
    print(
        f"{args.loop} loop, concurrency {args.concurrency}, {len(EVENT)}-byte events, "
        f"{args.rounds} rounds alternating the clients"
    )
    medians = show("client alone (transport.post to a bare receiver)", alone, disk=False)
    show("delivery worker end to end (SQLite queue, HttpTarget)", worker, disk=True)
    met = medians["curl"] <= medians["aiohttp"] / 2
    print(f"\nlibcurl at most half of aiohttp's CPU per request: {'met' if met else 'MISSED'}")
    return 0


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="stellwerk bench client", description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000, help="per client-alone round")
    parser.add_argument("--deliveries", type=int, default=10_000, help="per worker round")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--dir", type=Path, default=None, help="where the queue files go")
    parser.add_argument(
        "--history",
        action="store_true",
        help="only the worker with libcurl, with delivery history and without (alternating)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    args = parse(argv)
    receiver = subprocess.Popen(
        [sys.executable, str(HERE / "e2e.py"), "--receiver"],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        assert receiver.stdout is not None
        port = int(receiver.stdout.readline().split()[0])
        url = f"http://127.0.0.1:{port}/hook"
        factory: Callable[[], asyncio.AbstractEventLoop] = (
            uvloop.new_event_loop if args.loop == "uvloop" else asyncio.new_event_loop
        )
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(measure(args, url))
    finally:
        receiver.terminate()
        receiver.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

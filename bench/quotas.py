"""Benchmark of shared rate limiting (issue 21, item 3): `stellwerk bench quotas [options]`.

Starts a redis-server of its own and two `stellwerk serve` processes, each with a temporary data
directory on a free loopback port, whose tenant rates are so high that nothing is refused but
every request passes the limiter: one limits in process, the other with `--redis-url` (every
budget in Redis, as N gateways would share it). Both are driven with the same generator and load,
alternating (in process, Redis, in process, Redis) for single events and for batches; the better
of each pair counts, so a neighbour's burst on a shared machine does not decide the ratio.

It prints each phase's rate with the server's CPU time per request and per event (all threads of
its process tree, /proc/<pid>/stat) and the bytes it wrote per event, Redis's own CPU time per
request, and the script calls Redis ran per request (INFO commandstats): the issue asks for at
most one round trip per request and at least 0.9 of the rate without Redis. The exit status is 1
if a request was refused or either target was missed.

Options are those of `stellwerk bench ingest` (its comparison's load); `--url` is not used.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import redis

from loadgen import HEADER, Mode, Target
from stellwerk.cli import load_file, process_cpu

HERE = Path(__file__).resolve().parent
ingest = load_file(HERE / "ingest.py", "stellwerk_bench_ingest_for_quotas")
# Rates so high nothing is refused (the most the server takes), yet every request is limited.
HIGH = "10000000"


@contextmanager
def redis_server(directory: Path) -> Iterator[tuple[int, int]]:
    """A redis-server of the bench's own: its port and pid."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("stellwerk bench quotas: redis-server is not installed")
    port = ingest.free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(directory)],
        stdout=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        yield port, process.pid
    finally:
        process.terminate()
        process.wait(10)


def scripts_run(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(
        int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval")
    )


def rate_of(phase: Any, mode: Mode) -> float:
    result = phase.result
    return float(result.requests_per_second if mode is Mode.SINGLE else result.events_per_second)


def main(argv: Sequence[str]) -> int:
    args: argparse.Namespace = ingest.parse(argv)
    args.rate = None
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="stellwerk-bench-quotas-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        (root / "redis").mkdir()
        redis_port, redis_pid = stack.enter_context(redis_server(root / "redis"))
        servers: dict[str, tuple[Target, int, Path]] = {}
        for name, extra in (
            ("in process", []),
            ("redis", ["--redis-url", f"redis://127.0.0.1:{redis_port}/0"]),
        ):
            port, data_dir = ingest.free_port(), root / name.replace(" ", "-")
            command = [
                *(ingest.STELLWERK, "serve", "--data-dir", str(data_dir), "--port", str(port)),
                *("--tenant-event-rate", HIGH, "--tenant-request-rate", HIGH),
                *("--log-level", "warning", *extra),
            ]
            url = f"http://127.0.0.1:{port}"
            process = stack.enter_context(ingest.started(command, url + "/readyz"))
            key = json.loads((data_dir / "bootstrap.json").read_text())["ingest_key"]
            servers[name] = (Target(url, key), process.pid, data_dir)
        watcher = redis.Redis(port=redis_port)
        print(
            f"load: {args.concurrency} connections for single events, {args.batch_concurrency} "
            f"for batches of {args.batch_size}, {args.duration:g} s per phase, "
            f"~{args.data_bytes} B payload per event; rates loaded by whatever else runs here"
        )
        print(HEADER, flush=True)
        best: dict[tuple[str, Mode], Any] = {}
        per_request: dict[Mode, tuple[float, float]] = {}
        for mode in (Mode.SINGLE, Mode.BATCH):
            label = "single" if mode is Mode.SINGLE else f"batch x{args.batch_size}"
            for round_ in (1, 2):
                for name, (target, pid, data_dir) in servers.items():
                    scripts, redis_cpu = scripts_run(watcher), process_cpu(redis_pid)
                    phase = ingest.measured(
                        f"{name}, {label} #{round_}",
                        ingest.spec(args, target, mode),
                        pid,
                        failures,
                        data_dir,
                    )
                    result = phase.result
                    # Warm-up requests call Redis too: they count here.
                    sent = result.answered + sum(result.warmup_statuses.values())
                    if name == "redis" and sent:
                        calls = (scripts_run(watcher) - scripts) / sent
                        cpu = (process_cpu(redis_pid) - redis_cpu) * 1e6 / sent
                        print(
                            f"{'':<28} redis: {calls:.2f} script calls/request, "
                            f"CPU {cpu:,.1f} us/request",
                            flush=True,
                        )
                        per_request[mode] = max(per_request.get(mode, (0.0, 0.0)), (calls, cpu))
                    previous = best.get((name, mode))
                    if previous is None or (
                        phase.result.requests_per_second > previous.result.requests_per_second
                    ):
                        best[(name, mode)] = phase
        print()
        missed = False
        for mode in (Mode.SINGLE, Mode.BATCH):
            local, shared = best[("in process", mode)], best[("redis", mode)]
            unit = "req/s" if mode is Mode.SINGLE else "events/s"
            local_rate, shared_rate = rate_of(local, mode), rate_of(shared, mode)
            ratio = shared_rate / local_rate if local_rate else 0.0
            calls, redis_cpu = per_request.get(mode, (0.0, 0.0))
            missed |= ratio < 0.9 or calls > 1
            label = "single events" if mode is Mode.SINGLE else f"batches of {args.batch_size}"
            print(
                f"{label}: redis {shared_rate:,.0f} {unit}, in process {local_rate:,.0f}"
                f" {unit}: ratio {ratio:.2f} (issue 21: >= 0.9, {ingest.verdict(ratio >= 0.9)})"
            )
            print(f"  {cpu_line(local, shared)}")
            print(
                f"  redis script calls per request {calls:.2f} (issue 21: <= 1, "
                f"{ingest.verdict(calls <= 1)}), redis CPU {redis_cpu:,.1f} us/request"
            )
        if failures:
            print("\nrequests without a 202:")
            print("\n".join(failures))
        return 1 if failures or missed else 0


def cpu_line(local: Any, shared: Any) -> str:
    if local.cpu_us_per_event is None or shared.cpu_us_per_event is None:
        return "server CPU: not measured (no /proc)"
    return (
        f"server CPU: redis {shared.cpu_us_per_request:,.0f} us/request "
        f"({shared.cpu_us_per_event:,.1f} us/event), in process "
        f"{local.cpu_us_per_request:,.0f} us/request ({local.cpu_us_per_event:,.1f} us/event): "
        f"{shared.cpu_us_per_event / local.cpu_us_per_event:.2f}x"
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

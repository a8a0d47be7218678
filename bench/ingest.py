"""Benchmark of ingestion over HTTP: `stellwerk bench ingest [options]`.

With `--url` it drives that running server (`--key` or `$STELLWERK_INGEST_KEY`, `--bus`) and prints
requests/s, events/s and latency percentiles for `--mode single` (structured mode), `batch`, or
`both`. Without `--url` it runs the whole comparison of issue 4 by itself, in one run: it starts
a bare ASGI app that answers 202 (`bench/loadgen/baseline.py`, same uvicorn settings) and
`stellwerk serve` with rate limits off, each on a free loopback port with a temporary data
directory, drives both with the same generator and load, and prints

- single-event requests/s of Stellwerk and of the bare app, and their ratio (target >= 0.5);
- durable events/s with batches of `--batch-size` (target >= 100,000/s);
- acknowledgement latency p99 at half of Stellwerk's measured single-event maximum, in an open
  loop at that fixed rate (target <= 10 ms), beside the bare app's at the same rate: what the
  machine and the generator add by themselves.

Under each phase it prints the server's CPU time per request and per event (all threads of all
its processes, from /proc/<pid>/stat), the bytes it wrote to storage per event (`write_bytes` of
/proc/<pid>/io, the same tree) and the bytes the log stored per event (its files' growth):
figures that neighbours on a shared machine do not distort. The summary puts the targets of
issue 14 beside them.
It also runs the durable floor (`baseline.py --durable`: the bare app that decodes each body
with msgspec and appends it to a file with one `fdatasync` per request) with single events and
batches, and prints its CPU and bytes per event beside Stellwerk's: what an ack after the fsync
costs at the least on this machine, in the same run.
Single-event phases alternate (bare, Stellwerk, bare, Stellwerk) and the better of each pair
counts, so a neighbour's burst on a shared machine does not decide the ratio. Every answer other
than 202 is listed; the exit status is 1 if there was any.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from loadgen import HEADER, LoadResult, LoadSpec, Mode, Target, problems, run_load
from loadgen import summary_line as line
from stellwerk.cli import process_cpu, process_written, written_since

STELLWERK = str(Path(sys.executable).with_name("stellwerk"))


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="stellwerk bench ingest", description=__doc__)
    parser.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8080")
    parser.add_argument("--key", default=os.environ.get("STELLWERK_INGEST_KEY"))
    parser.add_argument("--bus", default="default")
    parser.add_argument("--mode", choices=["single", "batch", "both"], default="both")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--data-bytes", type=int, default=512, help="payload per event")
    parser.add_argument("--concurrency", type=int, default=64, help="connections in all")
    parser.add_argument("--batch-concurrency", type=int, default=16)
    parser.add_argument("--processes", type=int, default=1, help="generator processes")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per phase")
    parser.add_argument("--requests", type=int, help="stop a phase after this many requests")
    parser.add_argument("--rate", type=float, help="open loop: requests/s in all")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds not counted")
    parser.add_argument("--timeout", type=float, default=30.0, help="per request")
    return parser.parse_args(argv)


def spec(args: argparse.Namespace, target: Target, mode: Mode, **changes: object) -> LoadSpec:
    values: dict[str, object] = {
        "target": target,
        "mode": mode,
        "batch_size": args.batch_size,
        "data_bytes": args.data_bytes,
        "concurrency": args.batch_concurrency if mode is Mode.BATCH else args.concurrency,
        "processes": args.processes,
        "duration": args.duration,
        "requests": args.requests,
        "rate": args.rate,
        "warmup": args.warmup,
        "timeout": args.timeout,
    }
    values.update(changes)
    return LoadSpec(**values)  # type: ignore[arg-type]


def show(name: str, result: LoadResult, failures: list[str]) -> LoadResult:
    print(line(name, result), flush=True)
    failures.extend(problems(name, result))
    return result


def drive(args: argparse.Namespace) -> int:
    if not args.key:
        print(
            "stellwerk bench ingest: --url needs --key (or $STELLWERK_INGEST_KEY)", file=sys.stderr
        )
        return 2
    target = Target(args.url, args.key, args.bus)
    modes = [Mode.SINGLE, Mode.BATCH] if args.mode == "both" else [Mode(args.mode)]
    failures: list[str] = []
    print(HEADER)
    for mode in modes:
        name = f"{mode.value}" + (f" x{args.batch_size}" if mode is Mode.BATCH else "")
        show(name, run_load(spec(args, target, mode)), failures)
    print("\n".join(failures))
    return 1 if failures else 0


# -- the comparison ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(url: str, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Poll `url` until it answers 2xx (bounded; fails if the process exits)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{process.args!r} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 (loopback)
                if 200 <= answer.status < 300:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    raise SystemExit(f"{url} did not answer within {timeout}s")


@contextmanager
def started(command: list[str], ready_url: str) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    try:
        wait_for(ready_url, process)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def compare(args: argparse.Namespace) -> int:
    bare_port, floor_port, stellwerk_port = free_port(), free_port(), free_port()
    with (
        tempfile.TemporaryDirectory(prefix="stellwerk-bench-") as tmp,
        tempfile.TemporaryDirectory(prefix="stellwerk-floor-") as floor_tmp,
    ):
        data_dir, floor_dir = Path(tmp), Path(floor_tmp)
        baseline = str(Path(__file__).with_name("loadgen") / "baseline.py")
        bare_cmd = [sys.executable, baseline, "--port", str(bare_port)]
        floor_cmd = [*bare_cmd[:2], "--port", str(floor_port), "--durable", str(floor_dir)]
        stellwerk_cmd = [
            *(STELLWERK, "serve", "--data-dir", str(data_dir), "--port", str(stellwerk_port)),
            *("--tenant-event-rate", "0", "--tenant-request-rate", "0", "--log-level", "warning"),
        ]
        bare_url = f"http://127.0.0.1:{bare_port}"
        floor_url = f"http://127.0.0.1:{floor_port}"
        stellwerk_url = f"http://127.0.0.1:{stellwerk_port}"
        with (
            started(bare_cmd, bare_url + "/") as bare_process,
            started(floor_cmd, floor_url + "/") as floor_process,
            started(stellwerk_cmd, stellwerk_url + "/readyz") as stellwerk_process,
        ):
            key = json.loads((data_dir / "bootstrap.json").read_text())["ingest_key"]
            servers = {
                bare_url: bare_process.pid,
                floor_url: floor_process.pid,
                stellwerk_url: stellwerk_process.pid,
            }
            return run_comparison(
                args,
                Target(bare_url, key),
                Target(stellwerk_url, key),
                servers,
                data_dir,
                floor=Floor(Target(floor_url, key), floor_dir),
            )


@dataclass
class Floor:
    """The durable floor's server and the directory of its one file."""

    target: Target
    directory: Path

    def stored(self) -> int:
        return sum(path.stat().st_size for path in self.directory.glob("*.log"))


@dataclass
class Phase:
    """A phase's load result and what the server spent on it (None: not measured)."""

    result: LoadResult
    cpu_us_per_request: float | None = None
    cpu_us_per_event: float | None = None
    written_per_event: float | None = None
    stored_per_event: float | None = None

    @property
    def amplification(self) -> float | None:
        """Bytes written per byte stored."""
        if self.written_per_event is None or not self.stored_per_event:
            return None
        return self.written_per_event / self.stored_per_event


def log_bytes(data_dir: Path) -> int:
    """The size of the event log's files: what the events take once stored."""
    return sum(path.stat().st_size for path in (data_dir / "log").glob("*.log"))


def measured(
    name: str,
    load: LoadSpec,
    pid: int | None,
    failures: list[str],
    data_dir: Path | None = None,
    *,
    stored_bytes: Callable[[], int] | None = None,
) -> Phase:
    """Run one phase and print its figures, with the server's CPU per request and per event
    and, for Stellwerk (`data_dir`) or the durable floor (`stored_bytes`), the bytes written
    and stored per event."""
    if stored_bytes is None and data_dir is not None:
        stored_bytes = functools.partial(log_bytes, data_dir)
    cpu_before, written_before = process_cpu(pid), process_written(pid)
    stored_before = stored_bytes() if stored_bytes is not None else 0
    result = run_load(load)
    show(name, result, failures)
    phase = Phase(result)
    if pid is None or not result.answered:
        return phase
    # The server's CPU and writes span the warm-up too: divided by every request and event of
    # the phase, the warm-up's included (counting only the measured ones put a 0.5 s warm-up's
    # CPU on 5 s of events: about 10 % too much).
    events = max(1, result.events_acknowledged + result.warmup_events_acknowledged)
    answered = result.answered + sum(result.warmup_statuses.values())
    spent = process_cpu(pid) - cpu_before
    phase.cpu_us_per_request = spent * 1e6 / answered
    phase.cpu_us_per_event = spent * 1e6 / events
    figures = f"server CPU {phase.cpu_us_per_request:,.0f} us/request, "
    figures += f"{phase.cpu_us_per_event:,.1f} us/event"
    if stored_bytes is not None:
        phase.written_per_event = written_since(written_before, process_written(pid)) / events
        phase.stored_per_event = (stored_bytes() - stored_before) / events
        figures += (
            f"; written {phase.written_per_event:,.0f} B/event, "
            f"stored {phase.stored_per_event:,.0f} B/event"
        )
        if phase.amplification is not None:
            figures += f" ({phase.amplification:.2f}x)"
    print(f"{'':<28} {figures}", flush=True)
    return phase


def run_comparison(
    args: argparse.Namespace,
    bare: Target,
    stellwerk: Target,
    pids: dict[str, int] | None = None,
    data_dir: Path | None = None,
    floor: Floor | None = None,
) -> int:
    pids = pids or {}
    bare_pid, stellwerk_pid = pids.get(bare.url), pids.get(stellwerk.url)
    failures: list[str] = []
    print(
        f"load: {args.concurrency} connections for single events, {args.batch_concurrency} for "
        f"batches of {args.batch_size}, {args.processes} generator process(es), "
        f"{args.duration:g} s per phase, ~{args.data_bytes} B payload per event"
    )
    print(HEADER, flush=True)
    single_bare: list[Phase] = []
    single_stellwerk: list[Phase] = []
    for round_ in (1, 2):
        single_bare.append(
            measured(
                f"bare app, single #{round_}", spec(args, bare, Mode.SINGLE), bare_pid, failures
            )
        )
        single_stellwerk.append(
            measured(
                f"stellwerk, single #{round_}",
                spec(args, stellwerk, Mode.SINGLE),
                stellwerk_pid,
                failures,
                data_dir,
            )
        )
    floors: dict[Mode, Phase] = {}
    if floor is not None:
        for mode, label in ((Mode.SINGLE, "single"), (Mode.BATCH, f"batch x{args.batch_size}")):
            floors[mode] = measured(
                f"floor, {label}",
                spec(args, floor.target, mode),
                pids.get(floor.target.url),
                failures,
                stored_bytes=floor.stored,
            )
    batch = measured(
        f"stellwerk, batch x{args.batch_size}",
        spec(args, stellwerk, Mode.BATCH),
        stellwerk_pid,
        failures,
        data_dir,
    )
    best_bare = max(p.result.requests_per_second for p in single_bare)
    single = max(single_stellwerk, key=lambda p: p.result.requests_per_second)
    best_stellwerk = single.result.requests_per_second
    half = best_stellwerk / 2
    paced = measured(
        f"stellwerk, single @{half:,.0f}/s",
        spec(args, stellwerk, Mode.SINGLE, rate=half, duration=args.duration * 2),
        stellwerk_pid,
        failures,
        data_dir,
    ).result
    paced_bare = show(
        f"bare app, single @{half:,.0f}/s",
        run_load(spec(args, bare, Mode.SINGLE, rate=half, duration=args.duration * 2)),
        failures,
    )
    ratio = best_stellwerk / best_bare if best_bare else 0.0
    p99_ms = paced.latency.percentile(99) / 1e6
    p99_bare_ms = paced_bare.latency.percentile(99) / 1e6
    print()
    print(f"single events: stellwerk {best_stellwerk:,.0f} req/s, bare app {best_bare:,.0f} req/s")
    print(f"  ratio {ratio:.2f} (issue 14: >= 0.35, {verdict(ratio >= 0.35)})")
    print(f"  {target(single.cpu_us_per_request, 150, 'server CPU', 'us/request', '{:,.0f}')}")
    print(f"  {bytes_line(single)}")
    if Mode.SINGLE in floors:
        print(f"  {floor_line(floors[Mode.SINGLE], per_event=False)}")
    print(
        f"batches of {args.batch_size}: {batch.result.events_per_second:,.0f} durable events/s "
        f"(issue 14: >= 100,000, {verdict(batch.result.events_per_second >= 100_000)})"
    )
    print(f"  {target(batch.cpu_us_per_event, 10, 'server CPU', 'us/event', '{:,.1f}')}")
    print(f"  {bytes_line(batch)}")
    if Mode.BATCH in floors:
        print(f"  {floor_line(floors[Mode.BATCH], per_event=True)}")
    print(
        f"ack latency at {half:,.0f} req/s (half the maximum): p99 {p99_ms:.2f} ms "
        f"(target <= 10 ms: {verdict(p99_ms <= 10)}); bare app at that rate: {p99_bare_ms:.2f} ms"
    )
    if failures:
        print("\nrequests without a 202:")
        print("\n".join(failures))
        return 1
    return 0


def target(value: float | None, most: float, what: str, unit: str, form: str) -> str:
    """`what` with its value, and whether it is within issue 14's `most`."""
    if value is None:
        return f"{what}: not measured (no /proc)"
    shown = form.format(value)
    return f"{what} {shown} {unit} (issue 14: <= {most:g}, {verdict(value <= most)})"


def floor_line(phase: Phase, *, per_event: bool) -> str:
    """The durable floor's figures, to read beside Stellwerk's."""
    cpu = phase.cpu_us_per_event if per_event else phase.cpu_us_per_request
    if cpu is None:
        return "durable floor: not measured (no /proc)"
    shown = f"{cpu:,.1f} us/event" if per_event else f"{cpu:,.0f} us/request"
    rate = phase.result.events_per_second if per_event else phase.result.requests_per_second
    unit = "events/s" if per_event else "req/s"
    written = (
        f", written {phase.written_per_event:,.0f} B/event"
        if phase.written_per_event is not None
        else ""
    )
    return f"durable floor (decode, write, fdatasync): {rate:,.0f} {unit}, CPU {shown}{written}"


def bytes_line(phase: Phase) -> str:
    if phase.amplification is None or phase.written_per_event is None:
        return "bytes written per event: not measured (no /proc, or nothing stored)"
    return (
        f"written {phase.written_per_event:,.0f} B/event for {phase.stored_per_event:,.0f} "
        f"stored: {phase.amplification:.2f}x (issue 14: <= 2x, {verdict(phase.amplification <= 2)})"
    )


def main(argv: Sequence[str]) -> int:
    args = parse(argv)
    if args.url:
        return drive(args)
    args.rate = None  # the comparison sets its own rate for the latency phase
    return compare(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Benchmark of replays: throughput from the archive into the queue, and live ingest beside it.

Run `stellwerk bench replay [--events N] [--rules R] [--live-rate Q] [--seconds S]` (or
`.venv/bin/python bench/replay.py ...`). Two parts, each on fresh files in a temporary directory:

1. *Throughput*, in this process on the embedded stores: N events (~1 KB, the pattern benchmark's
   generator) in the log and in an archive; R rules (the pattern benchmark's *realistic* mix, one
   target each). Phases, measured in the same run:
   - `archive read`: `read_window` page after page, nothing else: what the archive store gives;
   - `router (live path)`: the router routing the same events from the log with the same rules;
   - `replay, unlimited`: one replay of the whole window with `replay_rate` 0 (target >= 50,000
     events/s);
   - `replay, paced`: the same with the default `replay_rate` of 50,000 events/s.
2. *Live latency*, against a real `stellwerk serve` (rate limits off, default replay settings):
   an archive of the default bus filled with N events, a rule sending every event to an HTTP
   receiver in this process that holds each delivery (so the delivery worker, measured by
   bench/e2e, does not take part). An open-loop load of single-event ingest requests at Q per
   second for S seconds is measured alone, then again while a replay of the whole archive runs.
   The p99 with the replay should stay within 2x of the p99 without it. The replay's own rate in
   the server is printed too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import msgspec

from loadgen import LoadResult, LoadSpec, Mode, Target, run_load
from loadgen.requests import new_run_id
from stellwerk.cli import load_file
from stellwerk.patterns import Matcher
from stellwerk.refs import BusRef, TenantId, TenantName
from stellwerk.routing import Router, RouteTarget, RuleSet
from stellwerk.routing.replay import NoReplayHooks, ReplayRunner
from stellwerk.seams import NewEvent
from stellwerk.storage.archive.sqlite import SqliteArchiveStore
from stellwerk.storage.control import ControlPlane, NewReplay
from stellwerk.storage.eventlog.sqlite import SqliteEventLog
from stellwerk.storage.queue.sqlite import SqliteDeliveryQueue
from stellwerk.storage.sqlite import LOG_DIR, PIPELINE_FILE

STELLWERK = str(Path(sys.executable).with_name("stellwerk"))
TENANT, BUS = TenantName("bench"), "default"
TARGET_RATE = 50_000


def _pattern_bench() -> ModuleType:
    """The pattern benchmark's event and rule generators, so the benchmarks see the same bus."""
    return load_file(Path(__file__).with_name("patterns.py"), "stellwerk_bench_patterns")


def row(name: str, count: int, seconds: float, extra: str = "") -> str:
    return f"{name:<28} {count:>9,} {count / seconds:>12,.0f} events/s  {extra}"


class Figures(NamedTuple):
    events: int
    deliveries: int
    seconds: float
    cpu: float  # process CPU seconds, all threads

    @property
    def rate(self) -> float:
        return self.events / self.seconds


class Clock:
    """Wall and process CPU time from its creation; CPU per event is what neighbours on a
    shared machine distort least."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def figures(self, events: int, deliveries: int) -> Figures:
        wall, cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        return Figures(events, deliveries, wall, cpu)


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


# -- part 1: throughput on the stores ----------------------------------------------------------


class _Counted(NoReplayHooks):
    def __init__(self) -> None:
        self.events = 0
        self.deliveries = 0

    def on_replayed(self, tenant: str, events: int, deliveries: int) -> None:
        self.events += events
        self.deliveries += deliveries


async def _fill(log: SqliteEventLog, archives: SqliteArchiveStore, uid: str, events: int) -> None:
    patterns = _pattern_bench()
    rng = random.Random(1)
    for start in range(0, events, 1000):
        batch = []
        for number in range(start, min(events, start + 1000)):
            event: dict[str, Any] = patterns.make_event(rng, number)
            batch.append(
                NewEvent(
                    TENANT,
                    BUS,
                    str(event["id"]),
                    str(event["source"]),
                    str(event["type"]),
                    event.get("subject"),
                    msgspec.json.encode(event),
                )
            )
        before = await log.last_position(BusRef(TENANT, BUS))
        await log.append(batch)
        stored = await log.read(BusRef(TENANT, BUS), after=before, limit=len(batch))
        await archives.archive(BusRef(TENANT, BUS), stored[-1].position, [(uid, e) for e in stored])


def _rules(count: int) -> RuleSet:
    """`count` rules of the realistic mix, and `backfill`, which takes every event."""
    patterns = _pattern_bench()
    rng = random.Random(2)
    matcher = Matcher()
    targets: dict[str, list[RouteTarget]] = {}
    for number in range(count):
        matcher.add(f"rule-{number}", patterns.make_realistic_rule(rng, number))
        targets[f"rule-{number}"] = [RouteTarget("t")]
    matcher.add("backfill", {"specversion": ["1.0"]})
    targets["backfill"] = [RouteTarget("new-destination")]
    return RuleSet(matcher, targets)


class _Stores:
    """The throughput part's stores, with a fresh delivery queue for each phase."""

    def __init__(
        self, directory: Path, control: ControlPlane, tenant_id: TenantId, uid: str
    ) -> None:
        self.directory = directory
        self.control = control
        self.tenant_id = tenant_id
        self.uid = uid
        self.phases = 0

    def queue(self) -> SqliteDeliveryQueue:
        self.phases += 1
        return SqliteDeliveryQueue(self.directory / f"{self.phases}-{PIPELINE_FILE}")


async def _route(stores: _Stores, log: SqliteEventLog, rules: RuleSet) -> Figures:
    counted = _Counted()

    class Count:
        def on_routed(self, tenant: str, bus: str, events: int, deliveries: int) -> None:
            counted.on_replayed(tenant, events, deliveries)

        def on_matched(self, tenant: str, bus: str, rules: Any) -> None:
            pass

    async with stores.queue() as queue:
        router = Router(log, queue, lambda bus: rules, lambda: [BusRef(TENANT, BUS)], hooks=Count())
        clock = Clock()
        await router.run(burst=True)
        return clock.figures(counted.events, counted.deliveries)


async def _replay(
    stores: _Stores,
    log: SqliteEventLog,
    archives: SqliteArchiveStore,
    rules: RuleSet,
    chosen: list[str] | None,
    rate: float,
) -> Figures:
    window = (datetime.now(UTC) - timedelta(days=1), datetime.now(UTC))
    name = f"r{stores.phases}"
    replay = NewReplay(name, BUS, "all", stores.uid, *window, rules=chosen)
    await stores.control.replays.create(stores.tenant_id, replay, max_running=1)
    counted = _Counted()
    async with stores.queue() as queue:
        runner = ReplayRunner(
            stores.control, archives, log, queue, lambda bus: rules,
            rate=rate, max_running=1, hooks=counted,
        )  # fmt: skip
        clock = Clock()
        await runner.run(burst=True)
        return clock.figures(counted.events, counted.deliveries)


async def throughput(directory: Path, events: int, rules: int, rounds: int) -> float:
    """Part 1; returns the best events/s of the unlimited replay to one rule."""
    rule_set = _rules(rules)
    control = await ControlPlane.open(f"sqlite+aiosqlite:///{directory / 'control.db'}")
    tenant = await control.create_tenant(TENANT)
    archive, _ = await control.archives.put(
        tenant.id, BUS, "all", pattern=None, retention_days=0, description="",
        start_position=0, max_archives=1,
    )  # fmt: skip
    stores = _Stores(directory, control, tenant.id, archive.uid)
    best: dict[str, Figures] = {}

    def keep(name: str, figures: Figures) -> None:
        if name not in best or figures.rate > best[name].rate:
            best[name] = figures

    try:
        async with (
            SqliteEventLog(directory / LOG_DIR) as log,
            SqliteArchiveStore(directory / PIPELINE_FILE) as archives,
        ):
            started = time.perf_counter()
            await _fill(log, archives, archive.uid, events)
            elapsed = time.perf_counter() - started
            print(f"(filled the log and the archive with {events:,} events in {elapsed:.1f} s)")
            window = (datetime.now(UTC) - timedelta(days=1), datetime.now(UTC))
            for _ in range(rounds):  # phases take turns; the best round of each counts
                clock = Clock()
                seq = read = 0
                while page := await archives.read_window(archive.uid, *window, after_seq=seq):
                    seq, read = page[-1].seq, read + len(page)
                keep("archive read", clock.figures(read, 0))
                keep(f"router, {rules + 1} rules", await _route(stores, log, rule_set))
                keep(
                    f"replay, all {rules + 1} rules",
                    await _replay(stores, log, archives, rule_set, None, 0),
                )
                keep(
                    "replay to one rule",
                    await _replay(stores, log, archives, rule_set, ["backfill"], 0),
                )
                keep(
                    "replay to one rule, paced",
                    await _replay(stores, log, archives, rule_set, ["backfill"], TARGET_RATE),
                )
    finally:
        await control.close()
    for name, figures in best.items():
        extra = f"{figures.cpu * 1e6 / figures.events:5.1f} us CPU/event"
        if figures.deliveries:
            extra += f", {figures.deliveries / figures.events:.2f} deliveries/event"
        print(row(name, figures.events, figures.seconds, extra))
    return best["replay to one rule"].rate


# -- part 2: live ingest latency beside a replay, against a real server -------------------------


class _Holding(asyncio.Protocol):
    def data_received(self, data: bytes) -> None:
        pass  # read, never answer: deliveries stay in flight and in the queue


def holding_receiver() -> int:
    """An HTTP receiver in a thread of this process that never answers; returns its port."""
    ready: list[int] = []
    started = threading.Event()

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(_Holding, "127.0.0.1", 0)
        ready.append(server.sockets[0].getsockname()[1])
        started.set()
        await asyncio.Event().wait()

    threading.Thread(target=asyncio.run, args=(serve(),), daemon=True).start()
    started.wait(10)
    return ready[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def call(url: str, method: str, key: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 (loopback)
        url, data=data, method=method, headers={"Authorization": f"Bearer {key}"}
    )
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 (loopback)
        return json.loads(answer.read() or b"null")


@contextmanager
def server(
    directory: Path, replay_rate: float, nice: int | None = None
) -> Iterator[tuple[str, dict[str, str]]]:
    """`stellwerk serve` with rate limits off and one replay at a time (the pipeline process at
    `nice` steps below the gateway, None: the server's default); its URL and keys."""
    port = free_port()
    command = [
        STELLWERK, "serve", "--data-dir", str(directory / "data"), "--port", str(port),
        "--tenant-event-rate", "0", "--tenant-request-rate", "0", "--allow-private-targets",
        "--max-concurrent-replays", "1", "--replay-rate", str(replay_rate),
    ]  # fmt: skip
    if nice is not None:
        command += ["--pipeline-nice", str(nice)]
    with (directory / "server.log").open("wb") as output:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output, stderr=output)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise SystemExit(f"stellwerk serve exited with {process.returncode}")
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=2):  # noqa: S310
                    break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    raise SystemExit("stellwerk serve did not get ready") from None
                time.sleep(0.1)
        keys = json.loads((directory / "data" / "bootstrap.json").read_text())
        yield url, keys
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Usage(NamedTuple):
    """What a process had used at one moment: CPU seconds (all threads) and bytes written."""

    cpu: float
    written: int

    @classmethod
    def of(cls, pid: int) -> Usage:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime
        written = 0
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                written = int(line.split()[1])
        return cls(ticks / os.sysconf("SC_CLK_TCK"), written)


COMMIT = 'stellwerk_log_append_commit_seconds_{}{{process="gateway"{}}}'
OVER = (0.005, 0.025, 0.1)  # commit times whose exceedances are counted (histogram buckets)
FULL_GC = 'python_gc_collections_total{{process="{}",generation="2"}}'


def series(url: str) -> dict[str, float]:
    """The server's metrics (both processes'), by series."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as answer:  # noqa: S310
        text = answer.read().decode()
    return {
        name: float(value)
        for name, _, value in (line.rpartition(" ") for line in text.splitlines())
        if name and not name.startswith("#")
    }


class Processes:
    """The server's gateway and pipeline processes (pids from their ready markers): what each
    used during a phase, so that a slower phase says which process and what it waited on."""

    def __init__(self, data: Path, url: str) -> None:
        self.url = url
        self.pids = {role: int((data / "run" / f"{role}.ready").read_text()) for role in ROLES}
        self._start: tuple[float, dict[str, Usage], dict[str, float]] | None = None

    def settle(self, quiet: float = 0.05, longest: float = 120.0) -> float:
        """Wait until neither process uses more than `quiet` of a core over half a second (the
        fill's after-work: the archiver, checkpoints, the index), so that the load alone
        measures live ingest alone; the seconds it took."""
        started = time.monotonic()
        last = {role: Usage.of(pid).cpu for role, pid in self.pids.items()}
        while time.monotonic() - started < longest:
            time.sleep(0.5)
            now = {role: Usage.of(pid).cpu for role, pid in self.pids.items()}
            if all(now[role] - last[role] <= quiet * 0.5 for role in self.pids):
                break
            last = now
        return time.monotonic() - started

    def nice(self, role: str) -> int:
        return os.getpriority(os.PRIO_PROCESS, self.pids[role])

    def begin(self) -> None:
        usage = {role: Usage.of(pid) for role, pid in self.pids.items()}
        self._start = (time.process_time(), usage, series(self.url))

    def report(self, requests: int, replayed: int) -> str:
        assert self._start is not None
        bench_cpu, before, was = self._start
        parts = []
        for role, pid in self.pids.items():
            now = Usage.of(pid)
            cpu = now.cpu - before[role].cpu
            written = now.written - before[role].written
            per = f"{cpu * 1e6 / requests:,.0f} us/request"
            if role == "pipeline" and replayed:
                per += f", {cpu * 1e6 / replayed:.1f} us/replayed event"
            parts.append(f"{role} {cpu:.2f} s CPU ({per}), {written / 1e6:,.1f} MB written")
        parts.append(f"load generator {time.process_time() - bench_cpu:.2f} s CPU")
        got = series(self.url)

        def diff(name: str) -> float:
            return got.get(name, 0.0) - was.get(name, 0.0)

        count = diff(COMMIT.format("count", ""))
        if count:
            mean = diff(COMMIT.format("sum", "")) * 1e3 / count
            over = [count - diff(COMMIT.format("bucket", f',le="{le}"')) for le in OVER]
            parts.append(
                f"log commits {count:,.0f}, mean {mean:.2f} ms, "
                + ", ".join(f"{n:,.0f} over {le * 1e3:g}" for n, le in zip(over, OVER, strict=True))
                + " ms"
            )
        full = ", ".join(f"{role} {diff(FULL_GC.format(role)):.0f}" for role in ROLES)
        parts.append(f"full collections: {full}")
        return "; ".join(parts)


ROLES = ("gateway", "pipeline")


def p99_ms(result: LoadResult) -> float:
    return result.latency.percentile(99) / 1e6


def p99_line(result: LoadResult) -> str:
    p50, p90 = (result.latency.percentile(p) / 1e6 for p in (50, 90))
    return (
        f"p99 {p99_ms(result):6.2f} ms  (p50 {p50:.2f} ms, p90 {p90:.2f} ms, "
        f"{result.accepted_requests:,} requests)"
    )


def latency(
    directory: Path,
    events: int,
    live_rate: float,
    seconds: float,
    replay_rate: float,
    nice: int | None = None,
    pairs: int = 1,
) -> tuple[float, float]:
    """Part 2; returns the live p99 without and with the replay, in ms (of all `pairs` of
    loads, which take turns so that a neighbour's burst on a shared machine falls on both)."""
    hold = holding_receiver()
    with server(directory, replay_rate, nice) as (url, keys):
        admin, target = keys["admin_key"], Target(url, keys["ingest_key"])
        call(f"{url}/v1/buses/default/archives/all", "PUT", admin, {})
        since = datetime.now(UTC) - timedelta(seconds=1)
        fill = run_load(
            LoadSpec(target, Mode.BATCH, batch_size=1000, concurrency=4,
                     requests=events // 1000, duration=None)
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while call(f"{url}/v1/buses/default/archives/all", "GET", admin)["events"] < events:
            if time.monotonic() > deadline:
                raise SystemExit("the archive did not fill in time")
            time.sleep(0.2)
        print(f"(filled the archive with {fill.events_acknowledged:,} events over HTTP)")
        rule = {
            "pattern": {"specversion": ["1.0"]},
            "targets": [{"id": "hold", "type": "http", "url": f"http://127.0.0.1:{hold}/hook",
                         "concurrency": 1, "timeout_seconds": 30}],
        }  # fmt: skip
        call(f"{url}/v1/buses/default/rules/backfill", "PUT", admin, rule)
        window = {"start": since.isoformat(), "end": datetime.now(UTC).isoformat()}
        live = LoadSpec(target, Mode.SINGLE, concurrency=32, rate=live_rate, duration=seconds,
                        warmup=1.0)  # fmt: skip
        processes = Processes(directory / "data", url)
        nices = ", ".join(f"{role} {processes.nice(role)}" for role in ROLES)
        print(f"(nice: {nices})")
        alone, beside = LoadResult(), LoadResult()
        replays = 0
        for pair in range(1, pairs + 1):
            # Each load sends new event ids: the same ones again would be duplicates,
            # answered without a write.
            waited = processes.settle()
            processes.begin()
            result = run_load(msgspec.structs.replace(live, run=new_run_id()))
            usage = processes.report(result.accepted_requests, 0)
            alone.merge(result)
            print(f"{f'{pair}. live ingest alone':<28} {p99_line(result)}")
            print(f"  (after {waited:.1f} s to settle) {usage}", flush=True)
            # Enough replays of the window, one at a time, to run all through the load.
            names = []
            for _ in range(int(seconds * (replay_rate or TARGET_RATE) / events) + 2):
                replays += 1
                names.append(f"r{replays}")
                body = {"name": names[-1], "archive": "all", "bus": "default", **window}
                call(f"{url}/v1/replays", "POST", admin, body)
            processes.begin()
            started = time.monotonic()
            result = run_load(msgspec.structs.replace(live, run=new_run_id()))
            elapsed = time.monotonic() - started
            states = {r["name"]: r for r in call(f"{url}/v1/replays", "GET", admin)["replays"]}
            replayed = sum(states[name]["replayed"] for name in names)
            usage = processes.report(result.accepted_requests, replayed)
            beside.merge(result)
            still = [name for name in names if states[name]["state"] in ("running", "queued")]
            print(f"{f'{pair}. live ingest beside replay':<28} {p99_line(result)}")
            print(
                f"  {row('replay in the server', replayed, elapsed)}",
                f"(paced at {replay_rate:,.0f}/s; {len(still)} replays left when the load ended)",
            )
            print(f"  {usage}", flush=True)
            for name in still:
                try:
                    call(f"{url}/v1/replays/{name}", "DELETE", admin)
                except urllib.error.HTTPError as exc:
                    if exc.code != 409:  # 409: it finished since the listing
                        raise
        if pairs > 1:
            print(f"{'all, live ingest alone':<28} {p99_line(alone)}")
            print(f"{'all, beside replay':<28} {p99_line(beside)}")
        return p99_ms(alone), p99_ms(beside)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=50_000, help="events in the archive")
    parser.add_argument("--rules", type=int, default=10, help="realistic rules beside backfill")
    parser.add_argument("--rounds", type=int, default=2, help="turns of the throughput phases")
    parser.add_argument("--live-rate", type=float, default=500.0, help="live requests/s")
    parser.add_argument("--seconds", type=float, default=8.0, help="per live-latency phase")
    parser.add_argument(
        "--replay-rate", type=float, default=TARGET_RATE, help="the server's replay_rate"
    )
    parser.add_argument(
        "--pipeline-nice", type=int, default=None, help="the server's --pipeline-nice"
    )
    parser.add_argument(
        "--pairs", type=int, default=1, help="turns of the live loads alone and beside a replay"
    )
    parser.add_argument("--part", choices=("all", "throughput", "latency"), default="all")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the files")
    args = parser.parse_args(argv)
    verdicts = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        if args.part in ("all", "throughput"):
            (Path(tmp) / "stores").mkdir()
            print(f"{'phase':<28} {'events':>9} {'rate':>12}")
            rate = asyncio.run(
                throughput(Path(tmp) / "stores", args.events, args.rules, args.rounds)
            )
            verdicts.append(
                f"replay to one rule: {rate:,.0f} events/s "
                f"(target >= {TARGET_RATE:,}: {verdict(rate >= TARGET_RATE)})"
            )
        if args.part in ("all", "latency"):
            (Path(tmp) / "server").mkdir()
            alone, beside = latency(
                Path(tmp) / "server",
                args.events,
                args.live_rate,
                args.seconds,
                args.replay_rate,
                args.pipeline_nice,
                args.pairs,
            )
            verdicts.append(
                f"live ingest p99 {beside:.2f} ms beside a replay, {alone:.2f} ms without: "
                f"{beside / alone:.2f}x (target <= 2x: {verdict(beside <= 2 * alone)})"
            )
    print()
    print("\n".join(verdicts))
    return 0


if __name__ == "__main__":
    sys.exit(main())

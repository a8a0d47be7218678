"""End-to-end benchmark of delivery: `stellwerk bench e2e [options]`.

It starts `stellwerk serve` (free loopback port, temporary data directory, private targets
allowed, rate limits off) and, in a process of its own, a receiver: a bare asyncio HTTP/1.1
server that answers every POST with 204 and records when each `webhook-id` arrived
(`time.monotonic()`, which is one clock for every process of the machine). The same receiver
process also listens on a second port where it reads requests and never answers. Then:

- (a) latency: one rule with one HTTP target to the receiver; single-event POSTs paced at
  `--rate` events/s (open loop) for `--latency-seconds`; per event, from the client's receipt of
  the 202 to the receiver's handler (and from the send). Target: p99 <= 25 ms.
- (b) throughput: `--events` events ingested in batches of 100 by 4 concurrent senders, while
  the receiver counts arrivals; the delivered rate is arrivals over the span from the first to
  the last (and the best whole second). Target >= 5,000/s.
- (c) isolation: a second rule on the same bus with a target to the port that never answers
  (it times out at its `timeout_seconds`, 5 s by default, and is retried); (b) again, and the
  healthy target's delivered rate. Target: at most 10% below (b). (b) and (c) alternate for
  `--rounds` rounds (the hanging rule is deleted before each (b)); the better of each counts.
- baseline: a raw aiohttp client in this process posting a body of the same size with the same
  headers to the same receiver at the target's concurrency, as fast as it answers: the ceiling
  for (b), with nothing of Stellwerk in the way.

Server CPU per delivered event (from /proc) is printed beside each phase; it is the figure least
disturbed by neighbours on a shared machine. `--profile DIR` records py-spy profiles of the
server (folded stacks, `server-a.folded` ...) during (a), (b) and (c). The exit status is 1 if an
event was lost or a request failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from stellwerk.cli import process_cpu
from stellwerk.cli.bench import process_tree, process_written, written_since
from stellwerk.cli.supervise import ready_marker
from stellwerk.config import Role

STELLWERK = str(Path(sys.executable).with_name("stellwerk"))
PY_SPY = str(Path(sys.executable).with_name("py-spy"))
BUS = "default"
BATCH = 100
SENDERS = 4
CONNECTIONS = 64
RESENDS = 3  # times one ingest request is sent again after the server dropped its connection
DATA = {"order": "x" * 200, "total": 42}
_T = TypeVar("_T")


# -- the receiver (runs in its own process, standard library only) --------------------------------


class _FastReceiver(asyncio.Protocol):
    """HTTP/1.1 keep-alive, Content-Length bodies only: what aiohttp's client sends."""

    arrivals: list[tuple[float, str]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1")
            lines = head.split("\r\n")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            self.handle(lines[0].split(" ")[1], headers)

    def handle(self, path: str, headers: dict[str, str]) -> None:
        if path == "/hook":
            self.arrivals.append((time.monotonic(), headers.get("webhook-id", "")))
            self.transport.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            return
        if path == "/count":
            body = str(len(self.arrivals)).encode()
        else:  # /take: everything recorded so far, and start afresh
            body = json.dumps(self.arrivals).encode()
            _FastReceiver.arrivals = []
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


class _Hanging(asyncio.Protocol):
    def data_received(self, data: bytes) -> None:
        pass  # read, never answer


async def _receive() -> None:
    loop = asyncio.get_running_loop()
    fast = await loop.create_server(_FastReceiver, "127.0.0.1", 0, backlog=1024)
    hanging = await loop.create_server(_Hanging, "127.0.0.1", 0, backlog=1024)
    ports = [s.sockets[0].getsockname()[1] for s in (fast, hanging)]
    print(*ports, flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()


# -- helpers -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def started(command: list[str], ready_url: str) -> Iterator[subprocess.Popen[bytes]]:
    """Run `command` until the block ends, once `ready_url` answers 2xx (bounded wait)."""
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise SystemExit(f"{command[:2]} exited with {process.returncode}")
            try:
                with urllib.request.urlopen(ready_url, timeout=2) as answer:  # noqa: S310
                    if 200 <= answer.status < 300:
                        break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    raise SystemExit(f"{ready_url} did not answer within 60 s") from None
            time.sleep(0.05)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def pipeline_ready(process: subprocess.Popen[bytes], data_dir: Path) -> int | None:
    """In embedded mode with several processes, wait (bounded) until the pipeline process is
    ready too: the parent starts it once the gateway answers, and until it has loaded, events
    are stored but not routed. Measured from the gateway's readiness, (a)'s first seconds were
    the pipeline's start (hundreds of ms of latency, and its start's CPU counted as events')."""
    if len(process_tree(process.pid)) < 2:
        return None  # one process plays every role: /readyz answered for all of them
    marker = ready_marker(data_dir, Role.PIPELINE)
    deadline = time.monotonic() + 60
    while not marker.exists():
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise SystemExit("the pipeline process was not ready within 60 s")
        time.sleep(0.05)
    return int(marker.read_text())


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def event(event_id: str) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "bench/e2e",
        "type": "bench.e2e",
        "data": DATA,
    }


class Server(NamedTuple):
    url: str
    admin: str
    ingest: str
    pid: int
    receiver: str
    hanging: str
    pipeline: int | None  # the pipeline process, in embedded mode with several


class Phase(NamedTuple):
    name: str
    events: int
    delivered: int
    duplicates: int
    span: float
    best_second: int
    cpu_us: float | None

    @property
    def rate(self) -> float:
        return self.delivered / self.span if self.span > 0 else 0.0


class Bench:
    def __init__(self, args: argparse.Namespace, server: Server) -> None:
        import aiohttp

        self.args = args
        self.server = server
        self.session = aiohttp.ClientSession(
            # Bounded, as a real client is: an overloaded server then shows as latency, not as a
            # pile of new connections the server has to refuse.
            connector=aiohttp.TCPConnector(limit=CONNECTIONS),
            timeout=aiohttp.ClientTimeout(total=60),
        )
        self.failures: list[str] = []
        self.resent: list[str] = []  # requests sent again after a dropped connection, and why

    def server_cpu(self) -> float:
        return process_cpu(self.server.pid)

    async def put_rule(self, name: str, url: str, concurrency: int) -> None:
        rule = {
            "pattern": {"source": ["bench/e2e"]},
            "targets": [{"id": "t", "type": "http", "url": url, "concurrency": concurrency}],
        }
        async with self.session.put(
            f"{self.server.url}/v1/buses/{BUS}/rules/{name}",
            json=rule,
            headers={"Authorization": f"Bearer {self.server.admin}"},
        ) as answer:
            if answer.status >= 300:
                raise SystemExit(f"rule {name}: {answer.status} {await answer.text()}")

    async def delete_rule(self, name: str) -> None:
        async with self.session.delete(
            f"{self.server.url}/v1/buses/{BUS}/rules/{name}",
            headers={"Authorization": f"Bearer {self.server.admin}"},
        ) as answer:
            if answer.status >= 300:
                raise SystemExit(f"rule {name}: {answer.status} {await answer.text()}")

    async def post(self, body: bytes, content_type: str) -> int:
        """Send, and send again when the server closed a kept connection under the request.

        A server may close an idle keep-alive connection at any time (uvicorn after 5 s), and a
        request the client sent on it at that moment gets no answer (`ServerDisconnectedError`,
        or a reset). HTTP leaves the retry to the client; sending an event again is safe, since
        its id deduplicates it. Each resend is counted and printed, not hidden.
        """
        import aiohttp

        for attempt in range(RESENDS + 1):
            try:
                return await self._post(body, content_type)
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                if attempt == RESENDS:
                    self.failures.append(f"ingest failed: {type(exc).__name__}: {exc}")
                    return 0
                self.resent.append(f"{type(exc).__name__}: {exc}")
            except aiohttp.ClientError as exc:
                self.failures.append(f"ingest failed: {type(exc).__name__}: {exc}")
                return 0
        return 0

    async def _post(self, body: bytes, content_type: str) -> int:
        async with self.session.post(
            f"{self.server.url}/v1/buses/{BUS}/events",
            data=body,
            headers={
                "Authorization": f"Bearer {self.server.ingest}",
                "Content-Type": content_type,
            },
        ) as answer:
            await answer.read()
            if answer.status != 202:
                self.failures.append(f"ingest answered {answer.status}")
            return answer.status

    async def receiver(self, path: str) -> Any:
        async with self.session.get(self.server.receiver.replace("/hook", path)) as answer:
            return json.loads(await answer.read())

    async def wait_arrivals(self, count: int, within: float) -> None:
        deadline = time.monotonic() + within
        while await self.receiver("/count") < count:
            if time.monotonic() > deadline:
                self.failures.append(f"only {await self.receiver('/count')} of {count} arrived")
                return
            await asyncio.sleep(0.05)

    # (a)
    async def latency(self) -> tuple[list[float], list[float], int]:
        import msgspec

        rate, seconds = self.args.rate, self.args.latency_seconds
        warm = int(rate * 0.5)
        total = warm + int(rate * seconds)
        prefix = uuid.uuid4().hex[:8]
        sent: dict[str, float] = {}
        acked: dict[str, float] = {}

        async def one(i: int) -> None:
            event_id = f"{prefix}-{i}"
            body = msgspec.json.encode(event(event_id))
            sent[event_id] = time.monotonic()
            if await self.post(body, "application/cloudevents+json") == 202:
                acked[event_id] = time.monotonic()

        tasks = []
        start = time.monotonic() + 0.05
        for i in range(total):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        await self.wait_arrivals(len(acked), 30)
        arrived: dict[str, float] = {}
        for at, event_id in await self.receiver("/take"):
            arrived.setdefault(event_id, at)
        measured = [f"{prefix}-{i}" for i in range(warm, total)]
        from_ack = [arrived[e] - acked[e] for e in measured if e in arrived and e in acked]
        from_send = [arrived[e] - sent[e] for e in measured if e in arrived]
        return from_ack, from_send, len(measured)

    # (b), (c)
    async def throughput(self, name: str) -> Phase:
        import msgspec

        events = self.args.events
        prefix = uuid.uuid4().hex[:8]
        batches = [
            msgspec.json.encode(
                [event(f"{prefix}-{n}") for n in range(start, min(events, start + BATCH))]
            )
            for start in range(0, events, BATCH)
        ]
        queue = list(reversed(batches))

        async def sender() -> None:
            while queue:
                await self.post(queue.pop(), "application/cloudevents-batch+json")

        cpu_before = self.server_cpu()
        await asyncio.gather(*(sender() for _ in range(SENDERS)))
        await self.wait_arrivals(events, within=max(60.0, events / 500))
        cpu = self.server_cpu() - cpu_before
        arrivals = await self.receiver("/take")
        ours = [(at, i) for at, i in arrivals if i.startswith(prefix)]
        unique = {i for _, i in ours}
        times = sorted(at for at, _ in ours)
        per_second: dict[int, int] = {}
        for at in times:
            per_second[int(at - times[0])] = per_second.get(int(at - times[0]), 0) + 1
        full = [c for s, c in per_second.items() if s < int(times[-1] - times[0])] or [len(times)]
        if len(unique) < events:
            self.failures.append(f"{name}: {events - len(unique)} events never arrived")
        return Phase(
            name=name,
            events=events,
            delivered=len(unique),
            duplicates=len(ours) - len(unique),
            span=times[-1] - times[0] if len(times) > 1 else 0.0,
            best_second=max(full),
            cpu_us=cpu * 1e6 / max(1, len(ours)),
        )

    async def baseline(self, concurrency: int) -> float:
        """Raw aiohttp to the receiver at the target's concurrency: the ceiling for (b)."""
        import aiohttp
        import msgspec

        count = self.args.events
        body = msgspec.json.encode(event("baseline"))
        headers = {
            "Content-Type": "application/cloudevents+json",
            "webhook-id": "baseline",
            "webhook-timestamp": str(int(time.time())),
            "webhook-signature": "v1," + "A" * 44,
        }
        left = count
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

            async def worker() -> None:
                nonlocal left
                while left > 0:
                    left -= 1
                    async with session.post(self.server.receiver, data=body, headers=headers) as r:
                        await r.read()

            started = time.monotonic()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            elapsed = time.monotonic() - started
        await self.receiver("/take")
        return float(count / elapsed)


async def measure(args: argparse.Namespace, server: Server) -> int:
    bench = Bench(args, server)
    try:
        await bench.put_rule("healthy", server.receiver, args.concurrency)
        print(
            f"{args.rate:,.0f} events/s single POSTs for {args.latency_seconds:g} s (a); "
            f"{args.events:,} events in batches of {BATCH} from {SENDERS} senders (b, c); "
            f"target concurrency {args.concurrency}",
            flush=True,
        )
        cpu_before = bench.server_cpu()
        pipeline_before = process_cpu(server.pipeline)
        written_before = process_written(server.pid)
        pipeline_written_before = process_written(server.pipeline)
        from_ack, from_send, expected = await profiled(args, server, "a", bench.latency())
        sent = expected + int(args.rate * 0.5)  # with the warm-up's
        latency_cpu = (bench.server_cpu() - cpu_before) * 1e6 / sent
        pipeline_cpu = (process_cpu(server.pipeline) - pipeline_before) * 1e6 / sent
        written = written_since(written_before, process_written(server.pid)) / sent
        pipeline_written = (
            written_since(pipeline_written_before, process_written(server.pipeline)) / sent
        )
        ms = [x * 1000 for x in from_ack]
        ms_send = [x * 1000 for x in from_send]
        alone: list[Phase] = []
        beside: list[Phase] = []
        baseline_before = baseline_after = 0.0
        if args.rounds:
            baseline_before = await bench.baseline(args.concurrency)
        for round_ in range(1, args.rounds + 1):
            if round_ > 1:
                await bench.delete_rule("hanging")
            name = f"(b) one fast target #{round_}"
            alone.append(await profiled(args, server, f"b{round_}", bench.throughput(name)))
            await bench.put_rule("hanging", server.hanging, 20)
            name = f"(c) + target that hangs #{round_}"
            beside.append(await profiled(args, server, f"c{round_}", bench.throughput(name)))
        if args.rounds:
            baseline_after = await bench.baseline(args.concurrency)
    finally:
        await bench.session.close()

    def fmt(values: list[float]) -> str:
        if not values:
            return "no data"
        return (
            f"p50 {percentile(values, 50):6.2f}  p99 {percentile(values, 99):6.2f}  "
            f"max {max(values):7.2f} ms"
        )

    p99 = percentile(ms, 99) if ms else float("inf")
    print()
    print(f"(a) latency, {len(ms):,} of {expected:,} events measured at {args.rate:,.0f}/s")
    print(f"    202 received -> receiver handler  {fmt(ms)}")
    print(f"    request sent -> receiver handler  {fmt(ms_send)}")
    print(
        f"    server CPU {latency_cpu:,.0f} us/event (ingest, routing and delivery;"
        f" the pipeline process {pipeline_cpu:,.0f})"
        if server.pipeline is not None
        else f"    server CPU {latency_cpu:,.0f} us/event (ingest, routing and delivery)"
    )
    stored = len(json.dumps(event("0" * 36)).encode())
    print(
        f"    bytes written {written:,.0f} per event"
        f" (the pipeline process {pipeline_written:,.0f}); an event is {stored:,} bytes as JSON"
    )
    print(f"(a) p99 {p99:.2f} ms, target <= 25 ms: {verdict(p99 <= 25)}")
    report_failures(bench)
    if not alone:
        return 1 if bench.failures else 0
    # The better round of each counts: a neighbour's burst on a shared machine should not
    # decide the comparison (every round is printed).
    healthy = max(alone, key=lambda p: p.rate)
    hanging = max(beside, key=lambda p: p.rate)
    baseline = max(baseline_before, baseline_after)
    drop = 1 - hanging.rate / healthy.rate if healthy.rate else 1.0
    print()
    print(f"{'phase':<30} {'delivered':>9} {'dups':>5} {'events/s':>9} {'best 1 s':>9} {'CPU':>12}")
    for phase in [*alone, *beside]:
        print(
            f"{phase.name:<30} {phase.delivered:>9,} {phase.duplicates:>5} {phase.rate:>9,.0f}"
            f" {phase.best_second:>9,} {phase.cpu_us or 0:>7,.0f} us/ev"
        )
    print(
        f"{'baseline: raw aiohttp':<30} {args.events:>9,} {'':>5} {baseline:>9,.0f}"
        f"   (before {baseline_before:,.0f}, after {baseline_after:,.0f})"
    )
    print()
    print(
        f"(b) {healthy.rate:,.0f} events/s, target >= 5,000: {verdict(healthy.rate >= 5000)}"
        f" ({healthy.rate / baseline:.0%} of raw aiohttp)"
    )
    print(f"(c) drop {drop:.1%} with a hanging target, target <= 10%: {verdict(drop <= 0.10)}")
    report_failures(bench)
    return 1 if bench.failures else 0


def report_failures(bench: Bench) -> None:
    if bench.resent:
        reasons = ", ".join(sorted(set(bench.resent)))
        print(f"\n{len(bench.resent)} ingest requests sent again (connection dropped): {reasons}")
    if bench.failures:
        print("\nproblems:\n" + "\n".join(sorted(set(bench.failures))))


async def profiled(args: argparse.Namespace, server: Server, label: str, work: Awaitable[_T]) -> _T:
    if args.profile is None:
        return await work
    args.profile.mkdir(parents=True, exist_ok=True)
    out = args.profile / f"server-{label}.folded"
    spy = await asyncio.create_subprocess_exec(
        *(
            PY_SPY,
            "record",
            "--pid",
            str(server.pid),
            "--output",
            str(out),
            "--threads",
            "--format",
            "raw",
        ),
        *("--rate", "200", "--nonblocking"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        result = await work
    finally:
        spy.send_signal(signal.SIGINT)
        await spy.wait()
    print(f"    profile of {label}: {out}", flush=True)
    return result


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="stellwerk bench e2e", description=__doc__)
    parser.add_argument("--rate", type=float, default=1000.0, help="events/s for (a)")
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--events", type=int, default=20_000, help="events for (b) and (c)")
    parser.add_argument("--rounds", type=int, default=2, help="of (b) then (c); 0: (a) alone")
    parser.add_argument("--concurrency", type=int, default=32, help="of the HTTP target")
    parser.add_argument("--profile", type=Path, help="py-spy profiles of the phases here")
    parser.add_argument("--receiver", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    args = parse(argv)
    if args.receiver:
        asyncio.run(_receive())
        return 0
    receiver = subprocess.Popen(
        [sys.executable, __file__, "--receiver"], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    try:
        assert receiver.stdout is not None
        fast_port, hang_port = receiver.stdout.readline().split()
        with tempfile.TemporaryDirectory(prefix="stellwerk-bench-e2e-") as tmp:
            port = free_port()
            command = [
                *(STELLWERK, "serve", "--data-dir", tmp, "--port", str(port)),
                *("--allow-private-targets", "--log-level", "warning"),
                *("--tenant-event-rate", "0", "--tenant-request-rate", "0"),
            ]
            url = f"http://127.0.0.1:{port}"
            with started(command, url + "/readyz") as process:
                pipeline = pipeline_ready(process, Path(tmp))
                keys = json.loads((Path(tmp) / "bootstrap.json").read_text())
                server = Server(
                    url=url,
                    admin=keys["admin_key"],
                    ingest=keys["ingest_key"],
                    pid=process.pid,
                    receiver=f"http://127.0.0.1:{int(fast_port)}/hook",
                    hanging=f"http://127.0.0.1:{int(hang_port)}/hook",
                    pipeline=pipeline,
                )
                return asyncio.run(measure(args, server))
    finally:
        receiver.terminate()
        receiver.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

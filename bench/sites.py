"""Global endpoints benchmark: `stellwerk bench sites [options]`.

Starts `stellwerk serve` processes on loopback (free ports, temporary data directories) and
measures what issue 18 sets as targets:

- baseline: one site alone (not paired): single-event POSTs paced at `--latency-rate` events/s
  for `--latency-seconds`; the p50/p99 of the ingest answer (202).
- sync: sites a and b paired, endpoint `bench` (primary a) with `"replication": "sync"` on the
  bus: the same POSTs to a; p50/p99, and p99 against the baseline's. Target: at most 2x.
- floor: what one peer request with one durable append costs raw, in the same sitting:
  single-event signed `POST /v1/peers/a/events` straight to b, paced as above (the request
  the sync path adds to each ingest request), on a bus of b's in no endpoint. Sync cannot be
  quicker than the baseline plus it. Then the same requests alternately as HTTP requests and
  on the kept peer stream (`stellwerk.sites.stream`), in one paced load: the two transports'
  latencies side by side.
- async lag: the endpoint switched to `async`; `--rate` events/s (batches of `--batch`, open
  loop) to a for `--seconds`, while a's `GET /v1/peers/b` is read every 0.2 s: the replication
  lag in events and seconds (max and p99 of the readings), and the time from the last
  acknowledgement to a lag of 0. Target: lag under 1 s at 1,000 events/s.

Beside each phase: the server's CPU µs per event (a and b summed where both work; from /proc)
and bytes written per event, the figures least moved by neighbours on a shared machine. The
exit status is 1 if a request failed or b does not end up with every event.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stellwerk.cli import process_cpu, process_written, written_since
from stellwerk.cli.bench import load

_e2e = load("e2e")  # one way to start a server and take a percentile: the e2e benchmark's
STELLWERK: str = _e2e.STELLWERK
SECRET = "bench-pair-secret-0123456789"
BUS = "default"
# The floor's peer requests go to a bus in no endpoint: on the endpoint's bus the standby's
# router would wait at replicas that the active site never routes (it does not have them).
FLOOR_BUS = "floor"
DATA = {"order": "x" * 200, "total": 42}


@dataclass
class Site:
    name: str
    url: str
    admin: str
    ingest: str
    pid: int

    def cpu(self) -> float:
        return process_cpu(self.pid)

    def written(self) -> dict[int, int]:
        return process_written(self.pid)


def start_site(stack: ExitStack, root: Path, name: str) -> Site:
    """A site, started on its own data directory under `root` until `stack` closes."""
    data = root / name
    port = _e2e.free_port()
    command = [
        *(STELLWERK, "serve", "--data-dir", str(data), "--port", str(port), "--site", name),
        *("--allow-private-targets", "--log-level", "warning"),
        *("--tenant-event-rate", "0", "--tenant-request-rate", "0"),
    ]
    url = f"http://127.0.0.1:{port}"
    process = stack.enter_context(_e2e.started(command, url + "/readyz"))
    keys = json.loads((data / "bootstrap.json").read_text())
    return Site(name, url, keys["admin_key"], keys["ingest_key"], process.pid)


def event(event_id: str) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "bench/sites",
        "type": "t",
        "data": DATA,
    }


class Client:
    def __init__(self) -> None:
        import aiohttp

        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=64), timeout=aiohttp.ClientTimeout(total=60)
        )
        self.failures: list[str] = []

    async def close(self) -> None:
        await self.session.close()

    async def call(self, at: Site, method: str, path: str, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {at.admin}"}
        async with self.session.request(method, at.url + path, json=body, headers=headers) as r:
            if r.status >= 300:
                raise SystemExit(f"{method} {path} on {at.name}: {r.status} {await r.text()}")
            return await r.json() if r.status != 204 else None

    async def send(self, at: Site, events: list[dict[str, Any]]) -> bool:
        headers = {
            "Authorization": f"Bearer {at.ingest}",
            "Content-Type": "application/cloudevents-batch+json",
        }
        try:
            async with self.session.post(
                f"{at.url}/v1/buses/{BUS}/events", data=json.dumps(events), headers=headers
            ) as answer:
                await answer.read()
                if answer.status == 202:
                    return True
                self.failures.append(f"{answer.status}")
        except Exception as exc:  # a benchmark counts failures rather than stopping
            self.failures.append(repr(exc))
        return False


@dataclass
class Cost:
    events: int
    cpu: float
    written: int

    def __str__(self) -> str:
        if not self.events:
            return "no events"
        return (
            f"server CPU {self.cpu / self.events * 1e6:.0f} µs/event, "
            f"{self.written / self.events:.0f} B written/event"
        )


class Meter:
    """CPU and bytes written by some sites between `start` and `stop`."""

    def __init__(self, *sites: Site) -> None:
        self.sites = sites
        self.cpu = sum(s.cpu() for s in sites)
        self.written = [s.written() for s in sites]

    def stop(self, events: int) -> Cost:
        cpu = sum(s.cpu() for s in self.sites) - self.cpu
        written = sum(
            written_since(before, s.written())
            for s, before in zip(self.sites, self.written, strict=True)
        )
        return Cost(events, cpu, written)


async def latencies(client: Client, at: Site, rate: float, seconds: float, tag: str) -> list[float]:
    """Single-event POSTs paced at `rate`/s (open loop): each answer's latency in ms."""
    taken: list[float] = []

    async def one(n: int) -> None:
        began = time.perf_counter()
        if await client.send(at, [event(f"{tag}-{n}")]):
            taken.append((time.perf_counter() - began) * 1000)

    await paced(rate, seconds, one)
    return taken


async def paced(
    rate: float, seconds: float, one: Callable[[int], Coroutine[Any, Any, None]]
) -> None:
    """`one(n)` for n = 0, 1, ..., started at `rate`/s (open loop), all awaited."""
    start = time.perf_counter()
    tasks = []
    for n in range(int(rate * seconds)):
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)  # pacing the load, not waiting for a condition
        tasks.append(asyncio.create_task(one(n)))
    await asyncio.gather(*tasks)


def replica_body(event_id: str) -> bytes:
    """One replicated event as a's sync path sends it: the event with its recorded time."""
    from stellwerk.clock import utc_now
    from stellwerk.events import format_rfc3339

    replica = {**event(event_id), "recordedtime": format_rfc3339(utc_now())}
    return json.dumps({"bus": FLOOR_BUS, "events": [replica]}).encode()


async def peer_post(client: Client, a: Site, b: Site, body: bytes) -> bool:
    """One signed `POST /v1/peers/a/events` to b; False (counted as a failure) unless 200."""
    from stellwerk.sites import signed_headers

    path = f"/v1/peers/{a.name}/events"
    headers = signed_headers(
        SECRET,
        site=a.name,
        tenant="default",
        timestamp=int(time.time()),
        method="POST",
        path=path,
        body=body,
    )
    headers["Content-Type"] = "application/json"
    try:
        async with client.session.post(b.url + path, data=body, headers=headers) as answer:
            await answer.read()
            if answer.status == 200:
                return True
            client.failures.append(f"peer request {answer.status}")
    except Exception as exc:  # a benchmark counts failures rather than stopping
        client.failures.append(repr(exc))
    return False


async def peer_latencies(
    client: Client, a: Site, b: Site, rate: float, seconds: float, tag: str
) -> list[float]:
    """Single-event signed peer requests from a to b, paced at `rate`/s: each one's latency in
    ms (b stores each durably before it answers, as for a sync request)."""
    taken: list[float] = []

    async def one(n: int) -> None:
        body = replica_body(f"{tag}-{n}")
        began = time.perf_counter()
        if await peer_post(client, a, b, body):
            taken.append((time.perf_counter() - began) * 1000)

    await paced(rate, seconds, one)
    return taken


class StreamClient:
    """A's side of the kept peer stream to b (`stellwerk.sites.stream`), spoken by hand: one
    WebSocket, signed numbered batches, answers matched by number."""

    def __init__(self, client: Client, a: Site, b: Site) -> None:
        self.client, self.a, self.b = client, a, b
        self.number = 0
        self.waiting: dict[int, asyncio.Future[int]] = {}

    async def __aenter__(self) -> StreamClient:
        from stellwerk.sites import signed_headers
        from stellwerk.sites.stream import NONCE_BYTES, Macs, stream_path

        path = stream_path(self.a.name)
        headers = signed_headers(
            SECRET,
            site=self.a.name,
            tenant="default",
            timestamp=int(time.time()),
            method="GET",
            path=path,
            body=b"",
        )
        self.ws = await self.client.session.ws_connect(self.b.url + path, headers=headers)
        nonce = (await self.ws.receive_bytes())[:NONCE_BYTES]
        self.macs = Macs(SECRET.encode(), nonce)
        self.reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.ws.close()
        await self.reader

    async def _read(self) -> None:
        from stellwerk.sites.stream import ANSWER_HEAD

        async for message in self.ws:
            number, status = ANSWER_HEAD.unpack(message.data[: ANSWER_HEAD.size])
            future = self.waiting.pop(number, None)
            if future is not None:
                future.set_result(status)

    async def send(self, body: bytes) -> int:
        from stellwerk.sites.stream import NUMBER

        self.number += 1
        number = NUMBER.pack(self.number)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.waiting[self.number] = future
        await self.ws.send_bytes(number + self.macs.batch(number, body) + body)
        return await future


async def peer_latencies_both(
    client: Client, a: Site, b: Site, rate: float, seconds: float, tag: str
) -> tuple[list[float], list[float]]:
    """As `peer_latencies`, but every other request on the kept peer stream instead of an HTTP
    request, in the same paced load: the latencies of each (ms)."""
    http: list[float] = []
    streamed: list[float] = []
    async with StreamClient(client, a, b) as stream:

        async def one(n: int) -> None:
            body = replica_body(f"{tag}-{n}")
            began = time.perf_counter()
            if n % 2 == 0:
                if await peer_post(client, a, b, body):
                    http.append((time.perf_counter() - began) * 1000)
                return
            try:
                status = await stream.send(body)
            except Exception as exc:  # a benchmark counts failures rather than stopping
                client.failures.append(repr(exc))
                return
            if status == 200:
                streamed.append((time.perf_counter() - began) * 1000)
            else:
                client.failures.append(f"peer stream {status}")

        await paced(rate, seconds, one)
    return http, streamed


def spread(values: list[float]) -> str:
    if not values:
        return "none"
    p50, p99 = _e2e.percentile(values, 50), _e2e.percentile(values, 99)
    return f"p50 {p50:.1f} ms, p99 {p99:.1f} ms ({len(values)} requests)"


async def lag_under_load(
    client: Client, a: Site, b: Site, args: argparse.Namespace
) -> tuple[int, bool]:
    """`--rate` events/s to a for `--seconds`; a's view of b's lag read meanwhile."""
    readings: list[tuple[int, float]] = []
    sending = True

    async def watch() -> None:
        while sending:
            peer = await client.call(a, "GET", "/v1/peers/b")
            for bus in peer["buses"]:
                if bus["bus"] == BUS:
                    readings.append((bus["lag_events"], bus["lag_seconds"]))
            await asyncio.sleep(0.2)  # the reading's pace, not a wait for a condition

    watcher = asyncio.create_task(watch())
    batches = int(args.rate * args.seconds / args.batch)
    interval = args.batch / args.rate
    meter = Meter(a, b)
    start = time.perf_counter()
    tasks = []
    for n in range(batches):
        delay = start + n * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        batch = [event(f"lag-{n}-{i}") for i in range(args.batch)]
        tasks.append(asyncio.create_task(client.send(a, batch)))
    acknowledged = sum(args.batch for ok in await asyncio.gather(*tasks) if ok)
    sent_for = time.perf_counter() - start
    done = time.perf_counter()
    drained = False
    while time.perf_counter() - done < 60:
        peer = await client.call(a, "GET", "/v1/peers/b")
        lag = next(b for b in peer["buses"] if b["bus"] == BUS)
        if lag["lag_events"] == 0:
            drained = True
            break
        await asyncio.sleep(0.05)
    drain = time.perf_counter() - done
    sending = False
    await watcher
    cost = meter.stop(acknowledged)
    events = [r[0] for r in readings] or [0]
    seconds = [r[1] for r in readings] or [0.0]
    print(
        f"async lag: {acknowledged} events acknowledged in {sent_for:.1f} s "
        f"({acknowledged / sent_for:.0f}/s offered {args.rate:g}/s); over {len(readings)} "
        f"readings lag events max {max(events)} p99 {_e2e.percentile(events, 99):.0f}, "
        f"lag seconds max {max(seconds):.2f} p99 {_e2e.percentile(seconds, 99):.2f}; "
        f"lag 0 {drain:.2f} s after the last ack{'' if drained else ' (NOT drained in 60 s)'}; "
        f"{cost} (a + b)"
    )
    return acknowledged, drained and max(seconds) < 1.0


async def adopted(client: Client, a: Site, b: Site) -> None:
    """Until one site's first tenant gave way to the other's; both then use the kept keys."""
    deadline = time.perf_counter() + 60
    while time.perf_counter() < deadline:
        for here, there in ((a, b), (b, a)):
            headers = {"Authorization": f"Bearer {there.admin}"}
            url = f"{here.url}/v1/peers/{there.name}"
            async with client.session.get(url, headers=headers) as r:
                if r.status == 200 and (await r.json())["tenant"]["state"] == "gave-way":
                    here.admin, here.ingest = there.admin, there.ingest
                    return
        await asyncio.sleep(0.1)
    raise SystemExit(f"neither {a.name} nor {b.name} gave way within 60 s")


async def settled(client: Client, a: Site, b: Site) -> None:
    """Until a shows b with its keys and buses mirrored and nothing to replicate (bounded)."""
    deadline = time.perf_counter() + 60
    while time.perf_counter() < deadline:
        peer = await client.call(a, "GET", "/v1/peers/b")
        if not peer["keys_and_buses"]["pending"] and not peer["pending"]:
            return
        await asyncio.sleep(0.1)
    raise SystemExit(f"{a.name} did not settle with {b.name} within 60 s")


async def measure(args: argparse.Namespace, root: Path) -> int:
    client = Client()
    try:
        with ExitStack() as stack:
            solo = start_site(stack, root, "solo")
            await latencies(client, solo, args.latency_rate, args.warm_seconds, "warm")
            meter = Meter(solo)
            alone = await latencies(client, solo, args.latency_rate, args.latency_seconds, "solo")
            print(f"baseline, one site: {spread(alone)}; {meter.stop(len(alone))}")
        with ExitStack() as stack:
            a = start_site(stack, root, "a")
            b = start_site(stack, root, "b")
            for here, there in ((a, b), (b, a)):
                await client.call(
                    here, "PUT", f"/v1/peers/{there.name}", {"url": there.url, "secret": SECRET}
                )
            await adopted(client, a, b)
            spec = {"primary": "a", "secondary": "b", "buses": [BUS], "replication": "sync"}
            await client.call(a, "PUT", "/v1/endpoints/bench", spec)
            # Pairing sets off work of its own (keys, buses and rules mirrored, the endpoint's
            # loops starting): let it settle, and warm up, before measuring.
            await settled(client, a, b)
            await latencies(client, a, args.latency_rate, args.warm_seconds, "warm")
            await settled(client, a, b)
            meter, on_a, on_b = Meter(a, b), Meter(a), Meter(b)
            synced = await latencies(client, a, args.latency_rate, args.latency_seconds, "sync")
            cost = meter.stop(len(synced))
            split = (on_a.stop(len(synced)), on_b.stop(len(synced)))
            ratio = (
                _e2e.percentile(synced, 99) / _e2e.percentile(alone, 99)
                if synced and alone
                else float("inf")
            )
            print(
                f"sync, two sites: {spread(synced)}; p99 {ratio:.2f}x the baseline's "
                f"(target <= 2x: {_e2e.verdict(ratio <= 2)}); {cost} (a + b; a: "
                f"{split[0]}; b: {split[1]})"
            )
            metrics = await _text(client, a, "/metrics")
            degraded = _counter(metrics, "stellwerk_site_sync_degraded_total")
            requests = _counter(metrics, "stellwerk_site_sync_requests_total")
            streamed_requests = _counter(metrics, "stellwerk_site_sync_streamed_total")
            resent = _counter(metrics, "stellwerk_site_replicated_events_total")
            print(
                f"sync degraded to async meanwhile: {degraded:g} requests; {requests:g} peer "
                f"requests ({streamed_requests:g} on the kept stream); {resent:g} events sent "
                "again by the replicator (warm-up included)"
            )
            await client.call(b, "PUT", f"/v1/buses/{FLOOR_BUS}", {})
            await peer_latencies(client, a, b, args.latency_rate, args.warm_seconds, "warm")
            on_b = Meter(b)
            raw = await peer_latencies(
                client, a, b, args.latency_rate, args.latency_seconds, "floor"
            )
            floor = [
                _e2e.percentile(alone, q) + _e2e.percentile(raw, q) if raw and alone else 0.0
                for q in (50, 99)
            ]
            print(
                f"floor, one peer request + one durable append on b: {spread(raw)}; "
                f"{on_b.stop(len(raw))} (b); baseline + it: p50 {floor[0]:.1f} ms, "
                f"p99 {floor[1]:.1f} ms ({floor[1] / _e2e.percentile(alone, 99):.2f}x the "
                "baseline's p99)"
            )
            http, streamed = await peer_latencies_both(
                client, a, b, args.latency_rate, args.latency_seconds, "both"
            )
            print(
                f"the same peer requests, alternately as HTTP requests and on the kept stream: "
                f"HTTP {spread(http)}; stream {spread(streamed)}"
            )
            await client.call(a, "PUT", "/v1/endpoints/bench", {**spec, "replication": "async"})
            _, within = await lag_under_load(client, a, b, args)
            print(f"async lag under 1 s: {_e2e.verdict(within)}")
        print(
            "(rates and latencies on a shared machine move with its neighbours: trust the CPU "
            "µs per event and the ratios)"
        )
        if client.failures:
            print(f"FAILED requests: {len(client.failures)}, first {client.failures[:3]}")
            return 1
        return 0
    finally:
        await client.close()


async def _text(client: Client, at: Site, path: str) -> str:
    async with client.session.get(at.url + path) as answer:
        text: str = await answer.text()
        return text


def _counter(metrics: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith(name)
    )


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="stellwerk bench sites", description=__doc__)
    parser.add_argument("--latency-rate", type=float, default=100.0, help="events/s, one each")
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--warm-seconds", type=float, default=3.0, help="before each")
    parser.add_argument("--rate", type=float, default=1000.0, help="events/s for the lag")
    parser.add_argument("--batch", type=int, default=10, help="events per request for the lag")
    parser.add_argument("--seconds", type=float, default=10.0, help="of the lag phase")
    return parser.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    args = parse(argv)
    with tempfile.TemporaryDirectory(prefix="stellwerk-bench-sites-") as tmp:
        return asyncio.run(measure(args, Path(tmp)))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

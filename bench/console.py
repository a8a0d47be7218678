"""Benchmark of the web console: `stellwerk bench console [options]`.

It starts `stellwerk serve --processes 1` on a fresh data directory, fills the log of bus
`default` with `--events` events (a million by default; one in a hundred matches a rule with a
`log` target, so that ten thousand have a delivery history), logs in with the admin key, and
asks each console page `--requests` times, one after another. For each it prints p50 and p95
(target p95 < 100 ms) and the server's CPU µs per request, beside the same run's baseline: the
API's `GET /v1/buses/default`, the cheapest keyed request the server answers. Pages read a
page of anything, never the log from its start: if one scanned, its time would grow with
`--events` and stand out against the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import msgspec

from stellwerk.cli import process_cpu, process_written, written_since

STELLWERK = str(Path(sys.executable).with_name("stellwerk"))
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="stellwerk bench console", description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the log")
    parser.add_argument("--requests", type=int, default=200, help="requests per page")
    parser.add_argument("--batch", type=int, default=1000, help="events per ingest request")
    parser.add_argument("--senders", type=int, default=4, help="concurrent ingest requests")
    return parser.parse_args(argv)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def started(command: list[str], ready_url: str) -> Iterator[subprocess.Popen[bytes]]:
    quiet = subprocess.DEVNULL
    process = subprocess.Popen(command, stdin=quiet, stdout=quiet, stderr=quiet)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise SystemExit(f"{command!r} exited with {process.returncode}")
            try:
                if httpx.get(ready_url, timeout=2).status_code < 300:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"{ready_url} did not answer within 60 s")
            time.sleep(0.05)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def event(i: int) -> dict[str, object]:
    kind = "order.created" if i % 100 == 0 else "page.viewed"
    return {
        "specversion": "1.0",
        "id": f"e-{i}",
        "source": "bench",
        "type": kind,
        "data": {"n": i, "path": f"/products/{i % 977}", "note": "console benchmark"},
    }


async def fill(url: str, key: str, args: argparse.Namespace) -> None:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    encoder = msgspec.json.Encoder()
    starts = iter(range(0, args.events, args.batch))

    async def sender(client: httpx.AsyncClient) -> None:
        for start in starts:
            body = encoder.encode(
                [event(i) for i in range(start, min(start + args.batch, args.events))]
            )
            while True:
                answer = await client.post("/v1/buses/default/events", content=body)
                if answer.status_code != 429 and answer.status_code != 503:
                    break
                await asyncio.sleep(float(answer.headers.get("retry-after", "1")))
            if answer.status_code != 202 or answer.json()["failed"]:
                raise SystemExit(f"ingest refused: {answer.status_code} {answer.text[:300]}")

    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as client:
        await asyncio.gather(*(sender(client) for _ in range(args.senders)))


def timed(client: httpx.Client, path: str, count: int, pid: int) -> tuple[float, float, float]:
    """p50 and p95 in ms, and the server's CPU µs per request."""
    took: list[float] = []
    cpu = process_cpu(pid)
    for _ in range(count):
        begin = time.perf_counter()
        answer = client.get(path)
        took.append((time.perf_counter() - begin) * 1000)
        if answer.status_code != 200:
            raise SystemExit(f"{path} answered {answer.status_code}: {answer.text[:300]}")
    used = (process_cpu(pid) - cpu) * 1e6 / count
    took.sort()
    return took[len(took) // 2], took[min(len(took) - 1, int(0.95 * len(took)))], used


def main(argv: Sequence[str]) -> int:
    args = parse(argv)
    with tempfile.TemporaryDirectory(prefix="stellwerk-bench-console-") as tmp:
        data = Path(tmp) / "data"
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        command = [
            STELLWERK, "serve", "--data-dir", str(data), "--port", str(port), "--processes", "1",
            "--max-batch-events", str(args.batch), "--tenant-event-rate", "0",
            "--tenant-request-rate", "0",
        ]  # fmt: skip
        with started(command, url + "/readyz") as server:
            boot = msgspec.json.decode((data / "bootstrap.json").read_bytes())
            admin = {"Authorization": f"Bearer {boot['admin_key']}"}
            rule = {
                "pattern": {"type": ["order.created"]},
                "targets": [{"id": "log", "type": "log"}],
            }
            made = httpx.put(url + "/v1/buses/default/rules/orders", headers=admin, json=rule)
            assert made.status_code == 201, made.text
            written = process_written(server.pid)
            cpu = process_cpu(server.pid)
            begin = time.monotonic()
            asyncio.run(fill(url, boot["admin_key"], args))
            took = time.monotonic() - begin
            per_event_cpu = (process_cpu(server.pid) - cpu) * 1e6 / args.events
            per_event_bytes = written_since(written, process_written(server.pid)) / args.events
            print(
                f"fill: {args.events:,} events in {took:.1f} s ({args.events / took:,.0f}/s), "
                f"{per_event_cpu:.0f} CPU µs/event, {per_event_bytes:.0f} bytes written/event "
                "(routing included)"
            )
            last = max(i for i in range(args.events) if i % 100 == 0)
            deadline = time.monotonic() + 600
            while (
                httpx.get(f"{url}/v1/buses/default/events/e-{last}", headers=admin).status_code
                != 200
            ):
                if time.monotonic() > deadline:
                    raise SystemExit("the last matching event was not delivered within 10 min")
                time.sleep(0.5)
            print(f"routed and delivered: {time.monotonic() - begin:.1f} s after the first event")
            with httpx.Client(base_url=url, timeout=30) as client:
                form = client.get("/console/login")
                token = _CSRF.search(form.text)
                assert token is not None
                answer = client.post(
                    "/console/login", data={"key": boot["admin_key"], "csrf": token.group(1)}
                )
                assert answer.status_code == 303, answer.text
                middle = args.events // 2 + 1  # not matched: found by its position
                bus = "/console/buses/default"
                pages = [
                    ("API GET /v1/buses/default (baseline)", None),
                    ("buses", "/console/buses"),
                    ("bus (rules, 20 newest events)", bus),
                    ("rule editor (latest event)", f"{bus}/rules/orders"),
                    ("event with history", f"{bus}/events/e-{last // 2 // 100 * 100}"),
                    ("event by position", f"{bus}/events/e-{middle}?at={middle + 1}"),
                    ("attempts of a target", f"{bus}/rules/orders/targets/log/attempts"),
                    ("dead letters", f"{bus}/dead-letters"),
                    ("replays", "/console/replays"),
                ]  # fmt: skip
                print(f"{'page':44} {'p50 ms':>8} {'p95 ms':>8} {'CPU µs/req':>11}")
                for label, path in pages:
                    if path is None:
                        with httpx.Client(base_url=url, headers=admin, timeout=30) as api:
                            p50, p95, used = timed(
                                api, "/v1/buses/default", args.requests, server.pid
                            )
                    else:
                        p50, p95, used = timed(client, path, args.requests, server.pid)
                    print(f"{label:44} {p50:8.2f} {p95:8.2f} {used:11.0f}")
    print("(target: p95 < 100 ms with 1,000,000 events; the machine is shared, so trust CPU µs)")
    return 0

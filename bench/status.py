"""Benchmark of public status pages: `stellwerk bench status [options]`.

It starts `stellwerk serve --processes 1` and a bare ASGI app that answers every GET with a
body as large as the page (same uvicorn settings as serve), each on a free loopback port, and
prints, with the issue's targets:

- cached page requests/s of Stellwerk and of the bare app under the same generator (keep-alive
  connections on one event loop), their ratio (target >= 0.6), and the server's CPU time per
  request beside each rate;
- update -> visible: `--updates` changes of a component's status, one after another, each
  timed from the admin API's answer to the first page that shows it (p50, p99; target p99
  <= 1 s);
- a page with `--components` components (2,000): the first reader's wait and what it got (the
  full page, or the skeleton within the 200 ms budget), and the time until the full page is
  served.

Phases alternate (bare, Stellwerk, bare, Stellwerk) and the better of each pair counts, so a
neighbour's burst on a shared machine does not decide the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

from stellwerk.cli import process_cpu
from stellwerk.cli.protocol import JoinedWritesProtocol

STELLWERK = str(Path(sys.executable).with_name("stellwerk"))
STATUSES = ["major_outage", "operational"]
BANNERS = {"major_outage": "Major System Outage", "operational": "All Systems Operational"}


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="stellwerk bench status", description=__doc__)
    parser.add_argument("--concurrency", type=int, default=32, help="keep-alive connections")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per rate phase")
    parser.add_argument("--rounds", type=int, default=2, help="bare/Stellwerk pairs")
    parser.add_argument("--updates", type=int, default=100)
    parser.add_argument("--components", type=int, default=2000)
    parser.add_argument("--serve-baseline", type=int, help=argparse.SUPPRESS)  # the bare app
    parser.add_argument("--body-bytes", type=int, default=10_000, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def serve_baseline(port: int, size: int) -> None:
    import uvicorn

    from loadgen.baseline import answer_lifespan

    body = b"x" * size
    headers = [(b"content-type", b"text/html; charset=utf-8"), (b"content-length", b"%d" % size)]

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http=JoinedWritesProtocol,
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
    )
    uvicorn.Server(config).run()


# -- the generator: HTTP/1.1 GETs on keep-alive connections ------------------------------------


async def _client(port: int, path: str, deadline: float, counts: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    try:
        while time.monotonic() < deadline:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            counts[0 if status == 200 else 1] += 1
    finally:
        writer.close()


def rate(port: int, path: str, pid: int, args: argparse.Namespace) -> tuple[float, float, int]:
    """Requests/s, the server's CPU µs per request, and answers other than 200."""
    counts = [0, 0]

    async def load() -> None:
        deadline = time.monotonic() + args.duration
        await asyncio.gather(
            *(_client(port, path, deadline, counts) for _ in range(args.concurrency))
        )

    cpu = process_cpu(pid)
    started = time.monotonic()
    asyncio.run(load())
    took = time.monotonic() - started
    done = counts[0] + counts[1]
    return done / took, (process_cpu(pid) - cpu) * 1e6 / max(done, 1), counts[1]


# -- servers -----------------------------------------------------------------------------------


@contextmanager
def started(command: list[str], ready_url: str) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
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


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main(argv: Sequence[str]) -> int:
    args = parse(argv)
    if args.serve_baseline:
        serve_baseline(args.serve_baseline, args.body_bytes)
        return 0
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="stellwerk-bench-") as tmp:
        data = Path(tmp)
        command = [STELLWERK, "serve", "--data-dir", str(data), "--port", str(port)]
        command += ["--processes", "1", "--log-level", "warning", "--tenant-request-rate", "0"]
        url = f"http://127.0.0.1:{port}"
        with started(command, url + "/readyz") as server:
            admin = {
                "Authorization": "Bearer "
                + json.loads((data / "bootstrap.json").read_text())["admin_key"]
            }
            with httpx.Client(base_url=url, headers=admin, timeout=60) as client:
                return run(args, client, server, port)


def run(
    args: argparse.Namespace, client: httpx.Client, server: subprocess.Popen[bytes], port: int
) -> int:
    client.put("/v1/status-pages/acme", json={"title": "Acme"}).raise_for_status()
    for i in range(10):
        client.put(
            f"/v1/status-pages/acme/components/c{i}", json={"name": f"Component {i}"}
        ).raise_for_status()
    page = client.get("/status/acme", headers={})
    size = len(page.content)
    ok = True

    # Cached page rate against the bare app.
    bare_port = free_port()
    bare = [sys.executable, __file__, "--serve-baseline", str(bare_port), "--body-bytes", str(size)]
    print(
        f"page: {size} bytes; {args.concurrency} keep-alive connections, {args.duration} s a phase"
    )
    best: dict[str, tuple[float, float]] = {}
    with started(bare, f"http://127.0.0.1:{bare_port}/") as bare_process:
        for _ in range(args.rounds):
            for name, (p, pid) in {
                "bare": (bare_port, bare_process.pid),
                "stellwerk": (port, server.pid),
            }.items():
                per_s, cpu_us, bad = rate(p, "/status/acme", pid, args)
                print(f"  {name:10} {per_s:9.0f} req/s   {cpu_us:7.0f} µs CPU/req   non-200: {bad}")
                ok &= bad == 0
                if name not in best or per_s > best[name][0]:
                    best[name] = (per_s, cpu_us)
    ratio = best["stellwerk"][0] / best["bare"][0]
    verdict = "met" if ratio >= 0.6 else "MISSED"
    print(f"cached page: {ratio:.2f}x the bare app (target >= 0.6): {verdict}")
    ok &= ratio >= 0.6

    # Update -> visible.
    latencies = []
    for i in range(args.updates):
        status = STATUSES[i % 2]
        client.put(
            "/v1/status-pages/acme/components/c0", json={"name": "Component 0", "status": status}
        ).raise_for_status()
        changed = time.monotonic()
        while BANNERS[status] not in client.get("/status/acme").text:
            if time.monotonic() - changed > 10:
                break
            time.sleep(0.005)
        latencies.append(time.monotonic() - changed)
    p99 = percentile(latencies, 0.99)
    p50 = percentile(latencies, 0.5)
    print(
        f"update -> visible over {len(latencies)} updates: p50 {p50 * 1000:.0f} ms, "
        f"p99 {p99 * 1000:.0f} ms (target <= 1000 ms): {'met' if p99 <= 1 else 'MISSED'}"
    )
    ok &= p99 <= 1

    # A large page: its first reader, and the full page.
    client.put("/v1/status-pages/big", json={"title": "Big"}).raise_for_status()

    async def components() -> None:
        async with httpx.AsyncClient(base_url=str(client.base_url), headers=client.headers) as c:
            gate = asyncio.Semaphore(16)

            async def one(i: int) -> None:
                async with gate:
                    body = {"name": f"Component {i}", "group": f"Group {i // 100}"}
                    (
                        await c.put(f"/v1/status-pages/big/components/c{i}", json=body)
                    ).raise_for_status()

            await asyncio.gather(*(one(i) for i in range(args.components)))

    asyncio.run(components())
    started_at = time.monotonic()
    first = client.get("/status/big")
    waited = time.monotonic() - started_at
    skeleton = first.headers.get("cache-control") == "no-store"
    while client.get("/status/big").headers.get("cache-control") == "no-store":
        time.sleep(0.01)
    full = time.monotonic() - started_at
    print(
        f"{args.components} components: first reader waited {waited * 1000:.0f} ms for "
        f"{'the skeleton' if skeleton else 'the full page'} (budget 200 ms): "
        f"{'met' if waited <= 0.25 else 'MISSED'}; full page after {full * 1000:.0f} ms"
    )
    ok &= waited <= 0.25
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

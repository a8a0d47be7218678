"""SIGTERM to the whole process group, as `make` and Kubernetes send it: always a clean stop.

`make run` passes a SIGTERM on to its child, which, in the same process group, had it already:
the server gets it twice, in quick succession or merged into one, depending on timing. The
second one used to count as "stop now", which skipped the app's shutdown and logged a
`CancelledError` traceback (issue 22: two stops in five). Each test here stops the server
several times, idle and while events are sent and delivered, and reads the whole log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from tests.cli.server import STELLWERK, log_problems, wait_for_group
from tests.conftest import free_port
from tests.e2e.receiving import Received, start_receiver

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 3

pytestmark = pytest.mark.slow


def assert_stopped_gracefully(log: str) -> None:
    assert not log_problems(log), log
    assert "stopping: not ready any more" in log, log
    assert "Application shutdown complete." in log, log


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"not ready within 60 s: {log.read_text()}")


@contextmanager
def in_own_group(command: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STELLWERK_")}
    with log.open("ab") as out:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**env, "STELLWERK_LOG_FORMAT": "json"},
            start_new_session=True,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


class Load:
    """Events sent in batches from a thread, and delivered to a receiver, until stopped."""

    def __init__(self, url: str, data_dir: Path) -> None:
        keys = json.loads((data_dir / "bootstrap.json").read_text())
        self.received = Received()
        self.receiver = start_receiver(self.received)
        self.url = url
        self.ingest = {"Authorization": f"Bearer {keys['ingest_key']}"}
        rule = {
            "pattern": {"source": ["load"]},
            "targets": [{"id": "hook", "type": "http", "url": self.receiver_url}],
        }
        put = httpx.put(
            f"{url}/v1/buses/default/rules/load",
            json=rule,
            headers={"Authorization": f"Bearer {keys['admin_key']}"},
        )
        assert put.status_code in (200, 201), put.text
        self.stopped = threading.Event()
        self.accepted = 0
        self.thread = threading.Thread(target=self._send, daemon=True)

    @property
    def receiver_url(self) -> str:
        return f"http://127.0.0.1:{self.receiver.server_address[1]}/hook"

    def _send(self) -> None:
        with httpx.Client(timeout=10) as client:
            batch = 0
            while not self.stopped.is_set():
                events = [
                    {"specversion": "1.0", "id": f"{batch}-{i}", "source": "load", "type": "t"}
                    for i in range(20)
                ]
                batch += 1
                try:
                    answer = client.post(
                        f"{self.url}/v1/buses/default/events", json=events, headers=self.ingest
                    )
                except httpx.TransportError:
                    return  # the server stopped listening
                if answer.status_code == 202:
                    self.accepted += 20

    def __enter__(self) -> Load:
        self.thread.start()
        # Under load means: ingest, routing and delivery all busy when the signal comes.
        assert self.received.wait_for(lambda r: len(r.ids) >= 100, 60), "no deliveries"
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join(timeout=30)
        self.receiver.shutdown()
        self.receiver.server_close()


@pytest.mark.parametrize("under_load", [False, True], ids=["idle", "under-load"])
def test_sigterm_to_the_group_and_again_to_the_server_stops_it_cleanly(
    tmp_path: Path, under_load: bool
) -> None:
    data = tmp_path / "data"
    for round in range(ROUNDS):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = tmp_path / f"serve-{round}.log"
        command = [STELLWERK, "serve", "--data-dir", str(data), "--port", str(port)]
        with in_own_group([*command, "--allow-private-targets"], log) as server:
            wait_ready(url, server, log)
            if under_load:
                with Load(url, data):
                    os.killpg(server.pid, signal.SIGTERM)
                    os.kill(server.pid, signal.SIGTERM)  # what make does on top
                    assert server.wait(timeout=60) == 0, log.read_text()
            else:
                os.killpg(server.pid, signal.SIGTERM)
                os.kill(server.pid, signal.SIGTERM)
                assert server.wait(timeout=60) == 0, log.read_text()
        assert_stopped_gracefully(log.read_text())


def test_the_drain_runs_as_configured_when_sigterm_comes_twice(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    command = [STELLWERK, "serve", "--data-dir", str(tmp_path / "d"), "--port", str(port)]
    with in_own_group([*command, "--drain-seconds", "30"], log) as server:
        wait_ready(url, server, log)
        os.killpg(server.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while httpx.get(f"{url}/readyz", timeout=2).status_code != 503:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        # Sent once the first was seen, so the two cannot merge into one pending signal.
        os.kill(server.pid, signal.SIGTERM)
        while "already stopping" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        # Still serving, not ready: the second SIGTERM did not cut the drain short.
        assert httpx.get(f"{url}/readyz", timeout=2).json()["status"] == "draining"
        assert httpx.get(f"{url}/livez", timeout=2).status_code == 200
        # A second Ctrl-C is the way to stop at once; the stores still close.
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=30) == 0, log.read_text()
    text = log.read_text()
    assert_stopped_gracefully(text)
    assert "stopping now" in text


@pytest.mark.parametrize("under_load", [False, True], ids=["idle", "under-load"])
def test_make_run_stops_cleanly_on_sigterm_to_its_group(tmp_path: Path, under_load: bool) -> None:
    if subprocess.run(["make", "--version"], capture_output=True, check=False).returncode:
        pytest.fail("make is required (CI installs it)")
    bin_dir = Path(sys.executable).parent
    data = tmp_path / "data"
    for round in range(ROUNDS):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = tmp_path / f"make-{round}.log"
        # `-o` keeps make from reinstalling the venv the tests run in.
        command = ["make", "--no-print-directory", "-o", f"{bin_dir}/stellwerk", "run"]
        settings = [f"BIN={bin_dir}", f"PORT={port}", f"DATA_DIR={data}"]
        with in_own_group([*command, *settings, "ARGS=--allow-private-targets"], log) as make:
            wait_ready(url, make, log)
            if under_load:
                with Load(url, data):
                    os.killpg(make.pid, signal.SIGTERM)
                    make.wait(timeout=60)
                    wait_for_group(make.pid)
            else:
                os.killpg(make.pid, signal.SIGTERM)
                make.wait(timeout=60)
                wait_for_group(make.pid)
        assert_stopped_gracefully(log.read_text())

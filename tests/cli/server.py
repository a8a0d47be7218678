"""A real `stellwerk serve` process on a loopback port, for tests that need signals and sockets."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from tests.polling import wait_until

STELLWERK = str(Path(sys.executable).with_name("stellwerk"))


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    url: str
    data_dir: Path
    log_path: Path | None = None  # default: beside the data directory

    def wait_until(self, path: str, status: int, timeout: float = 30.0) -> httpx.Response:
        """Poll `path` until it answers `status` (a bounded loop, not a sleep)."""

        def answer() -> httpx.Response:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"server exited with {self.process.returncode}: {self.output()}"
                )
            return httpx.get(self.url + path, timeout=2)

        return wait_until(
            answer,
            what=f"{path} to answer {status}",
            within=timeout,
            accept=lambda response: response.status_code == status,
            ignoring=httpx.TransportError,
        )

    @property
    def log_file(self) -> Path:
        """Where the process's output goes: a file, not a pipe, so that a chatty server never
        blocks on a pipe nobody reads (a worker logging an outage's errors did, mid-test)."""
        return self.log_path or self.data_dir.with_name(self.data_dir.name + ".log")

    def output(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def terminate(self, sig: int = signal.SIGTERM) -> None:
        self.process.send_signal(sig)


@contextmanager
def running_server(
    data_dir: Path,
    port: int,
    *args: str,
    env: dict[str, str] | None = None,
    ready: bool = True,
    log_path: Path | None = None,
    new_session: bool = False,
    ready_timeout: float = 90.0,  # a start on a loaded 2-core machine once took over 30 s
) -> Iterator[ServerProcess]:
    """A server, once ready (`ready=False`: once started); its output goes to `log_path`.

    One process unless `--processes` says otherwise (tests of several are in test_processes.py);
    `new_session`: in a process group of its own, for signals to the whole group."""
    command: Sequence[str] = [
        STELLWERK,
        "serve",
        "--data-dir",
        str(data_dir),
        "--port",
        str(port),
        *args,
    ]
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server_log = log_path or data_dir.with_name(data_dir.name + ".log")
    with open(server_log, "ab") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={
                **os.environ,
                "STELLWERK_LOG_FORMAT": "json",
                "STELLWERK_PROCESSES": "1",
                **(env or {}),
            },
            start_new_session=new_session,
        )
    server = ServerProcess(process, f"http://127.0.0.1:{port}", data_dir, log_path)
    try:
        if ready:
            server.wait_until("/readyz", 200, timeout=ready_timeout)
        yield server
    finally:
        if new_session:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        elif process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def log_problems(log: str) -> list[str]:
    """Lines of a server's JSON log that a graceful run does not have: tracebacks and lines at
    error level or above (other lines, make's say, are skipped)."""
    problems = []
    for line in log.splitlines():
        if "Traceback" in line or "CancelledError" in line:
            problems.append(line)
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("level") in ("error", "critical"):
            problems.append(line)
    return problems


def wait_for_group(pgid: int, timeout: float = 60) -> None:
    """Until no process of the group is left (make's child outlives make by a moment)."""

    def gone() -> bool:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_until(gone, what=f"process group {pgid} to end", within=timeout)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [STELLWERK, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )

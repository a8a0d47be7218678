"""Run a Markdown page's shell examples as written, against a fresh server, in order.

Which blocks run is said by the fence's info string (GitHub shows the first word, `sh`, and
ignores the rest):

- ```` ```sh server ````: one `make run ...` line, the command that starts the server. The runner
  starts it in the background as `make run ... BIN=<the tests' venv> PORT=<free port>
  DATA_DIR=<temporary>/stellwerk-data` (with `-o` so make does not rebuild that venv), waits
  for `/readyz`, and stops the server before it starts the next one (SIGTERM to its process
  group, as a terminal's Ctrl-C or Kubernetes would, expecting a clean log).
- ```` ```sh run ````: run with `bash -e -o pipefail` in the temporary directory, which holds
  the server's data directory as `stellwerk-data` and the tests' venv as `.venv`, with no
  `stellwerk` on `PATH`: exactly what a reader in a fresh clone has after `make run`.
  Variables and functions a block defines are there for the next one, as in one terminal.
  It must exit 0.
- other blocks are illustrations and do not run.

The only changes made to a block's text: the port numbers 8080 (the server) and 9000 (a
receiver) become free ports, wherever they stand as a whole word.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from tests.cli.server import log_problems, wait_for_group
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
SERVER_PORT = "8080"
RECEIVER_PORT = "9000"
BLOCK_TIMEOUT = 120.0
# A backtick fence's info string holds no backtick (CommonMark), so inline code is no fence.
_FENCE = re.compile(r"^```([^`\s]*)([^`]*)$")


@dataclass(frozen=True)
class Block:
    """A fenced code block: its language, the words after it, its text and its first line."""

    language: str
    flags: frozenset[str]
    text: str
    line: int

    @property
    def kind(self) -> str | None:
        """ "server", "run", or None for a block that only shows something."""
        if self.language != "sh":
            return None
        return next((kind for kind in ("server", "run") if kind in self.flags), None)


def blocks_of(page: Path) -> list[Block]:
    found: list[Block] = []
    lines = page.read_text().splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        start = i
        i += 1
        body: list[str] = []
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        assert i < len(lines), f"{page.name}:{start + 1}: a fence is never closed"
        found.append(
            Block(
                language=opening.group(1),
                flags=frozenset(opening.group(2).split()),
                text="\n".join(body) + "\n",
                line=start + 1,
            )
        )
        i += 1
    return found


def runnable(page: Path) -> list[Block]:
    return [block for block in blocks_of(page) if block.kind is not None]


@dataclass
class Outcome:
    block: Block
    returncode: int
    output: str


class Runbook:
    """One page's run: the temporary directory, the ports, the server running now."""

    def __init__(self, page: Path, workdir: Path) -> None:
        self.page = page
        self.workdir = workdir
        self.port = free_port()
        self.receiver_port = free_port()
        self.server: subprocess.Popen[bytes] | None = None
        self.server_logs: list[Path] = []
        self.outcomes: list[Outcome] = []
        (workdir / ".venv").symlink_to(VENV_BIN.parent)
        self.state = workdir / ".runbook-state"
        self.env = _clean_environment()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def substitute(self, text: str) -> str:
        text = re.sub(rf"\b{SERVER_PORT}\b", str(self.port), text)
        return re.sub(rf"\b{RECEIVER_PORT}\b", str(self.receiver_port), text)

    def run_all(self) -> None:
        try:
            for block in runnable(self.page):
                if block.kind == "server":
                    self.start_server(block)
                else:
                    assert self.server is not None, (
                        f"{self.page.name}:{block.line}: a run block before any server block"
                    )
                    self.run(block)
        finally:
            self.stop_server()

    def start_server(self, block: Block) -> None:
        words = shlex.split(block.text, comments=True)
        assert words[:2] == ["make", "run"], (
            f"{self.page.name}:{block.line}: a server block is one `make run ...` line"
        )
        self.stop_server()
        log = self.workdir / f"server-{len(self.server_logs)}.log"
        self.server_logs.append(log)
        command = [
            "make",
            "--no-print-directory",
            "-C",
            str(ROOT),
            "-o",
            f"{VENV_BIN}/stellwerk",
            *words[1:],
            f"BIN={VENV_BIN}",
            f"PORT={self.port}",
            f"DATA_DIR={self.workdir / 'stellwerk-data'}",
        ]
        with log.open("wb") as out:
            self.server = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**self.env, "STELLWERK_LOG_FORMAT": "json"},
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while True:
            assert self.server.poll() is None, f"the server stopped: {log.read_text()}"
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"not ready in 60 s: {log.read_text()}"
            time.sleep(0.05)

    def stop_server(self) -> None:
        server, self.server = self.server, None
        if server is None:
            return
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
            wait_for_group(server.pid)
        finally:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()

    def run(self, block: Block) -> None:
        script = "\n".join(
            [
                "set -a",  # what a block sets is there for the next one, as in one terminal
                f"[ -f {shlex.quote(str(self.state))} ] && . {shlex.quote(str(self.state))}",
                "set -e -o pipefail",
                self.substitute(block.text),
                f"{{ export -p; declare -f; }} > {shlex.quote(str(self.state))}",
            ]
        )
        output = self.workdir / f"block-{block.line}.out"
        with output.open("wb") as out:
            shell = subprocess.Popen(
                ["bash", "-c", script],
                cwd=self.workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
            try:
                returncode = shell.wait(timeout=BLOCK_TIMEOUT)
            except subprocess.TimeoutExpired:
                returncode = -1
            finally:
                # Whatever the block left in the background (a receiver) ends with it.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(shell.pid, signal.SIGKILL)
                shell.wait()
        outcome = Outcome(block, returncode, output.read_text(errors="replace"))
        self.outcomes.append(outcome)
        assert returncode == 0, self.explain(outcome)

    def explain(self, outcome: Outcome) -> str:
        logs = "\n".join(log.read_text(errors="replace")[-4000:] for log in self.server_logs[-1:])
        return (
            f"{self.page.name}:{outcome.block.line}: the block exited {outcome.returncode}\n"
            f"--- block\n{outcome.block.text}--- its output\n{outcome.output}"
            f"--- the server's log (end)\n{logs}"
        )

    def server_log_problems(self) -> list[str]:
        """Lines of the servers' logs that a clean run does not have."""
        problems = []
        for log in self.server_logs:
            text = log.read_text(errors="replace")
            if "Application shutdown complete." not in text:
                problems.append(f"{log.name}: no graceful shutdown")
            problems += log_problems(text)
        return problems


def _clean_environment() -> dict[str, str]:
    """The environment of a new terminal: no venv activated, no Stellwerk settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STELLWERK_", "PYTEST", "VIRTUAL_ENV")) and k != "PYTHONPATH"
    }
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and Path(p) != VENV_BIN]
    env["PATH"] = os.pathsep.join(path)
    return env

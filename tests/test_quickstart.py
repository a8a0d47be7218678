"""The README quick start, for real: `make run` in a fresh copy of the repository.

This builds a new `.venv` from nothing, as a new user's machine would, so it is the slowest test.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]


def repository_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return [f for f in listed.stdout.splitlines() if (ROOT / f).is_file()]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_make_run_starts_a_working_platform(tmp_path: Path) -> None:
    if shutil.which("make") is None:
        pytest.fail("make is required (CI installs it)")
    copy = tmp_path / "stellwerk"
    for name in repository_files():
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, copy / name)
    port = free_port()
    log = (tmp_path / "make-run.log").open("wb")
    env = {
        k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV" and not k.startswith("STELLWERK_")
    }
    process = subprocess.Popen(
        ["make", "run", f"PORT={port}"],
        cwd=copy,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 600
        ready = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        output = (tmp_path / "make-run.log").read_text(errors="replace")[-3000:]
        assert ready is not None, output
        assert ready.status_code == 200, output

        bootstrap = copy / "stellwerk-data" / "bootstrap.json"
        assert oct(bootstrap.stat().st_mode & 0o777) == "0o600"
        keys = json.loads(bootstrap.read_text())
        admin = {"Authorization": f"Bearer {keys['admin_key']}"}
        created = httpx.put(f"http://127.0.0.1:{port}/v1/buses/orders", headers=admin)
        assert created.status_code == 201
        listed = httpx.get(f"http://127.0.0.1:{port}/v1/buses", headers=admin)
        assert [b["name"] for b in listed.json()["buses"]] == ["default", "orders"]
        ingest = {"Authorization": f"Bearer {keys['ingest_key']}"}
        assert httpx.get(f"http://127.0.0.1:{port}/v1/buses", headers=ingest).status_code == 403
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()

"""A deployment that cannot work stops at start with one line; what a retry can mend (a store
out of reach) does not stop it."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest
from tests.cli.server import STELLWERK
from tests.conftest import free_port
from tests.disks import tmpfs

pytestmark = pytest.mark.slow  # starts processes


def serve(*args: str, port: int | None = None) -> tuple[int, list[str]]:
    done = subprocess.run(
        [STELLWERK, "serve", "--port", str(port or free_port()), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "STELLWERK_SECRET_KEY"},
    )
    return done.returncode, done.stderr.splitlines()


def test_processes_sharing_a_database_without_a_secret_key_stop_at_once(tmp_path: Path) -> None:
    code, lines = serve(
        "--data-dir",
        str(tmp_path / "data"),
        "--role",
        "gateway",
        "--nats-url",
        "nats://127.0.0.1:1",
        "--database-url",
        "postgresql://stellwerk@127.0.0.1:1/stellwerk",
    )
    assert code == 1
    assert lines == [
        "stellwerk: error: STELLWERK_SECRET_KEY is not set; processes that share a database "
        "must share a key (make one with `openssl rand -base64 32`)"
    ]


def test_a_data_directory_that_cannot_be_written_stops_the_start(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, lines = serve("--data-dir", str(blocker / "data"))
    assert code == 1
    assert lines == [
        f"stellwerk: error: {blocker / 'data'} is not a directory Stellwerk can write to: "
        "Not a directory"
    ]
    code, lines = serve(
        "--data-dir", str(tmp_path / "data"), "--backup-dir", str(blocker / "backups")
    )
    assert code == 1
    assert lines[0].startswith(f"stellwerk: error: {blocker / 'backups'} is not a directory")


def test_a_read_only_or_full_data_directory_stops_the_start(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "data", size="1m") as disk:
        disk.fill()
        code, lines = serve("--data-dir", str(disk.path))
        assert code == 1
        assert lines == [
            f"stellwerk: error: {disk.path} is not a directory Stellwerk can write to: "
            "No space left on device"
        ]
        disk.free()
        disk.remount_read_only()
        code, lines = serve("--data-dir", str(disk.path))
        assert code == 1
        assert lines == [
            f"stellwerk: error: {disk.path} is not a directory Stellwerk can write to: "
            "Read-only file system"
        ]


def test_a_port_another_process_listens_on_stops_the_start_before_the_app_loads(
    tmp_path: Path,
) -> None:
    port = free_port()
    with socket.create_server(("127.0.0.1", port)):
        code, lines = serve("--data-dir", str(tmp_path / "data"), "--processes", "1", port=port)
    assert code == 1
    assert lines == [f"stellwerk: error: cannot listen on 127.0.0.1:{port}: Address already in use"]
    # The app never loaded: nothing of it (the control plane, the log) is in the data directory.
    assert not (tmp_path / "data" / "bootstrap.json").exists()

"""`stellwerk peers add`: pairing from the command line, before or beside a running server."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import httpx
import pytest
from tests.cli.server import run_cli, running_server
from tests.conftest import free_port
from tests.sites.support import FLAGS, SECRET

pytestmark = pytest.mark.slow


def test_peers_add_pairs_a_tenant_that_the_server_then_shows(tmp_path: Path) -> None:
    data = tmp_path / "a"
    made = run_cli("tenants", "create", "acme", "--json", "--data-dir", str(data))
    assert made.returncode == 0, made.stderr
    admin = json.loads(made.stdout.strip().splitlines()[-1])["admin_key"]
    common = ("--data-dir", str(data), "--site", "a", "--tenant", "acme")

    # Each command costs seconds (imports, migrations): one refusal here, the rest are the
    # same checks as PUT /v1/peers/{site} (test_peers.py).
    refused = run_cli(
        "peers", "add", "a", "--url", "http://127.0.0.1:1", "--secret", SECRET, *common
    )
    assert refused.returncode == 2, refused.stderr
    assert "this site's own name" in refused.stderr

    added = run_cli(
        "peers", "add", "b", "--url", "http://127.0.0.1:1/", "--secret", SECRET, *common
    )
    assert added.returncode == 0, added.stderr
    assert "paired tenant acme with b" in added.stdout
    with sqlite3.connect(data / "control.db") as db:
        (sealed,) = db.execute("SELECT secret FROM sites_peers").fetchone()
    assert SECRET not in sealed

    with running_server(data, free_port(), "--site", "a", *FLAGS) as server:
        answer = httpx.get(
            f"{server.url}/v1/peers/b", headers={"Authorization": f"Bearer {admin}"}, timeout=10
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["url"] == "http://127.0.0.1:1"

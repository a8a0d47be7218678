"""The AWS CLI (`awscli`, run as a subprocess as a user would) against Stellwerk: it puts events,
lists buses and reports a wrong secret as EventBridge's error, with no change to the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tests.awsapi.conftest import Server

pytestmark = pytest.mark.slow

AWS = shutil.which("aws", path=str(Path(sys.executable).parent))


def aws(server: Server, *args: str, secret: str | None = None) -> subprocess.CompletedProcess[str]:
    key = server.bootstrap.admin_key
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": key.split("_")[1],
        "AWS_SECRET_ACCESS_KEY": secret or key,
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    assert AWS is not None, "awscli is a dev dependency: make .venv/.dev"
    return subprocess.run(
        [AWS, "events", *args, "--endpoint-url", server.url, "--output", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_aws_cli_puts_events_and_lists_buses(server: Server) -> None:
    entries = [{"Source": "cli", "DetailType": "Ping", "Detail": json.dumps({"n": 1})}]
    put = aws(server, "put-events", "--entries", json.dumps(entries))
    assert put.returncode == 0, put.stderr
    answer = json.loads(put.stdout)
    assert answer["FailedEntryCount"] == 0
    event_id = answer["Entries"][0]["EventId"]
    stored = {e["id"]: e for e in server.on_bus("default", 1_000_000, until=event_id)}
    assert stored[event_id]["data"] == {"n": 1}
    assert stored[event_id]["awsregion"] == "eu-west-1"
    listed = aws(server, "list-event-buses")
    assert listed.returncode == 0, listed.stderr
    assert "default" in [b["Name"] for b in json.loads(listed.stdout)["EventBuses"]]


def test_the_aws_cli_reports_a_wrong_secret(server: Server) -> None:
    refused = aws(server, "list-event-buses", secret="swk_wrong")
    assert refused.returncode != 0
    assert "InvalidSignatureException" in refused.stderr


def test_the_aws_cli_creates_a_global_endpoint(server: Server) -> None:
    peer = {"url": "http://127.0.0.1:9", "secret": "pair-secret-0123456789"}
    assert server.native("PUT", "/v1/peers/us-east-1", json=peer).status_code == 201
    buses = [
        {"EventBusArn": f"arn:aws:events:{site}:default:event-bus/default"}
        for site in ("local", "us-east-1")
    ]
    routing = {
        "FailoverConfig": {
            "Primary": {"HealthCheck": "arn:aws:route53:::healthcheck/cli"},
            "Secondary": {"Route": "us-east-1"},
        }
    }
    made = aws(
        server,
        "create-endpoint",
        "--name",
        "from-cli",
        "--routing-config",
        json.dumps(routing),
        "--event-buses",
        json.dumps(buses),
    )
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["State"] == "CREATING"  # the peer is not there
    native = server.native("GET", "/v1/endpoints/from-cli").json()
    assert (native["primary"], native["secondary"]) == ("local", "us-east-1")

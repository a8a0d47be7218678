"""`--sentry-dsn`: errors reach Sentry (a local receiver speaking its envelope endpoint) with
the release and the role, and without keys, secrets, authorization headers or payloads."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from tests.cli.server import STELLWERK
from tests.conftest import free_port
from tests.ops.receivers import receiver, sentry_events

from stellwerk.auth.keys import parse_key
from stellwerk.config import ConfigError, load_settings
from stellwerk.ops.sentry import release, scrub_event

FAULT = Path(__file__).with_name("sentry_fault.py")


@pytest.mark.slow
def test_a_fault_arrives_with_release_and_role_and_nothing_of_the_request(
    tmp_path: Path,
) -> None:
    marker = f"payload-{uuid.uuid4().hex}"
    with receiver() as (url, received):
        dsn = url.replace("http://", "http://publickey@") + "/42"
        run = subprocess.run(
            [sys.executable, str(FAULT), dsn, str(tmp_path / "data"), marker],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert run.returncode == 0, run.stderr
        outcome = json.loads(run.stdout.splitlines()[-1])
        assert outcome["status"] == 500
        (event,) = received.wait_for(lambda: sentry_events(received))
        raw = b"".join(body for _, _, body in received.snapshot())
    assert all(path == "/api/42/envelope/" for path, _, _ in received.snapshot())
    assert event["release"] == release() == "stellwerk@0.1.0"
    assert event["tags"]["role"] == "gateway"
    (exception,) = event["exception"]["values"]
    assert exception["type"] == "RuntimeError"
    assert re.fullmatch(r"cannot store \d+ bytes for Bearer \[REDACTED\]", exception["value"])
    assert exception["stacktrace"]["frames"], "the stack goes along"
    assert all("vars" not in frame for frame in exception["stacktrace"]["frames"])
    assert event["contexts"]["log"]["event"] == "request failed"
    assert event["contexts"]["log"]["path"] == "/v1/buses/default/events"
    # Nothing of the request: not its key (in a header and in the exception's message), not
    # the event it carried (in a local variable of the failing frame), not its cookie.
    key = outcome["key"]
    assert key.encode() not in raw
    assert parse_key(key).secret.encode() not in raw  # the secret may hold "_" itself
    assert marker.encode() not in raw
    assert b"request" not in json.dumps(list(event)).encode()


@pytest.mark.slow
def test_a_server_reports_a_store_it_cannot_reach_with_the_password_scrubbed(
    tmp_path: Path,
) -> None:
    closed = free_port()
    database = f"postgresql://stellwerk:s3cretpassword@127.0.0.1:{closed}/stellwerk"
    with receiver() as (url, received):
        dsn = url.replace("http://", "http://publickey@") + "/7"
        server = subprocess.Popen(
            [
                STELLWERK,
                "serve",
                "--data-dir",
                str(tmp_path / "data"),
                "--port",
                str(free_port()),
                "--database-url",
                database,
                "--sentry-dsn",
                dsn,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            events = received.wait_for(lambda: sentry_events(received))
        finally:
            server.terminate()
            server.wait(timeout=60)
        raw = b"".join(body for _, _, body in received.snapshot())
    event = events[0]
    assert event["release"] == "stellwerk@0.1.0"
    assert event["tags"]["role"] == "all"
    assert event["message"] == "start failed, retrying"
    assert "Connect call failed" in event["contexts"]["log"]["error"] or (
        "refused" in event["contexts"]["log"]["error"]
    )
    assert b"s3cretpassword" not in raw
    assert b"--database-url" not in raw  # the command line stays home


def test_the_scrubber_blanks_secret_fields_and_drops_requests_and_frame_variables() -> None:
    event = {
        "request": {"headers": {"Authorization": "Bearer abc"}, "data": "{...}"},
        "breadcrumbs": {"values": [{"message": "x"}]},
        "extra": {"api_key": "k", "note": "token swk_0123456789abcdef_secretsecret"},
        "exception": {
            "values": [
                {
                    "type": "E",
                    "value": "Bearer abcdef for postgresql://u:pw@h/db",
                    "stacktrace": {"frames": [{"function": "f", "vars": {"body": "p"}}]},
                }
            ]
        },
    }
    scrubbed = scrub_event(event, {})
    assert "request" not in scrubbed
    assert "breadcrumbs" not in scrubbed
    assert scrubbed["extra"] == {"api_key": "[REDACTED]", "note": "token swk_[REDACTED]"}
    (exception,) = scrubbed["exception"]["values"]
    assert exception["value"] == "Bearer [REDACTED] for postgresql://u:[REDACTED]@h/db"
    assert exception["stacktrace"]["frames"] == [{"function": "f"}]


def test_a_dsn_is_checked_and_never_repeated_in_the_error() -> None:
    with pytest.raises(ConfigError, match="is not a Sentry DSN") as refused:
        load_settings({"sentry_dsn": "https://sentry.example/1"})
    with pytest.raises(ConfigError, match="is not a Sentry DSN") as refused:
        load_settings({"sentry_dsn": "ftp://topsecret@sentry.example/1"})
    assert "topsecret" not in str(refused.value)
    settings = load_settings({"sentry_dsn": "https://topsecret@sentry.example/1"})
    assert "topsecret" not in repr(settings)

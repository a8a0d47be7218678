"""`stellwerk receive`, the webhook receiver the README starts: it verifies, prints and counts."""

from __future__ import annotations

import subprocess
import time
from datetime import UTC, datetime

import httpx
import pytest
from standardwebhooks import Webhook
from tests.cli.server import STELLWERK, run_cli
from tests.conftest import free_port

from stellwerk.delivery.targets import generate_secret

pytestmark = pytest.mark.slow  # starts processes

BODY = '{"specversion":"1.0","id":"o-1","source":"urn:shop","type":"order.created"}'


def signed(secret: str, msg_id: str, body: str = BODY) -> dict[str, str]:
    now = datetime.now(UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, now, body),
        "content-type": "application/cloudevents+json",
    }


def post_when_listening(url: str, headers: dict[str, str]) -> httpx.Response:
    deadline = time.monotonic() + 30
    while True:
        try:
            return httpx.post(url, content=BODY, headers=headers, timeout=5)
        except httpx.ConnectError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_it_verifies_signatures_prints_each_webhook_and_exits_after_count() -> None:
    secret, port = generate_secret(), free_port()
    url = f"http://127.0.0.1:{port}/hooks"
    receiver = subprocess.Popen(
        [STELLWERK, "receive", "--port", str(port), "--secret", secret, "--count", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert post_when_listening(url, signed(secret, "o-1")).status_code == 204
        forged = post_when_listening(url, signed(generate_secret(), "o-2"))
        assert forged.status_code == 401  # a 4xx: the delivery is dead-lettered at once
        assert post_when_listening(url, signed(secret, "o-3")).status_code == 204
        out, err = receiver.communicate(timeout=30)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()
    assert receiver.returncode == 0, err
    lines = out.splitlines()
    assert lines[0] == f"verified o-1: {BODY}"
    assert lines[1].startswith("rejected o-2: ")
    assert lines[2] == f"verified o-3: {BODY}"
    assert f"listening on http://127.0.0.1:{port}/" in err


def test_it_fails_when_the_webhooks_do_not_come_in_time() -> None:
    port, secret = str(free_port()), generate_secret()
    result = run_cli(
        "receive", "--port", port, "--secret", secret, "--count", "1", "--timeout", "0.5"
    )
    assert result.returncode == 1
    assert "0 of 1 webhooks verified within 0.5 s" in result.stderr


def test_a_malformed_secret_is_refused_before_it_listens() -> None:
    result = run_cli("receive", "--secret", "hunter2")
    assert result.returncode == 2
    assert "--secret" in result.stderr
    assert "listening" not in result.stderr

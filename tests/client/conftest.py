"""What the client's tests share: the whole app behind uvicorn on loopback, once per module,
with a second port in front of the same app that injects faults; and the sync and async
clients behind one awaitable face, so that every test runs against both."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from tests.conftest import Bootstrap, free_port
from tests.polling import wait_until

from stellwerk.app import build_app
from stellwerk.client import AsyncClient, Client, Retries
from stellwerk.compose import Services
from stellwerk.config import load_settings
from stellwerk.refs import BusRef, TenantName

# The server's batch limit in these tests, below the client's default of 1,000, so that the
# client meets a 413 and has to split.
SERVER_MAX_BATCH_EVENTS = 100
# How long `store-then-stall` holds its answer back: far beyond the client timeout of the test.
STALL_SECONDS = 1.0
# Fast retries: the tests count attempts, they do not wait for them.
QUICK = Retries(attempts=4, backoff=0.01, max_backoff=0.05, max_retry_after=2.0)


@dataclass
class Request:
    path: str
    size: int
    status: int = 0


@dataclass
class Faults:
    """An ASGI layer in front of the app, on a port of its own. Each request takes the next
    scripted fault (none: passed through). `store-then-503` lets the app store the events and
    answers 503 instead of its 202, as a proxy whose upstream answered too late would;
    `store-then-stall` stores them and answers only after `STALL_SECONDS`, past the client's
    timeout; `503`, `502` and `429` answer without asking the app; `broken` answers 502 for
    good; `max_body` refuses larger bodies with 413, as a proxy with a body limit does."""

    app: ASGIApp
    script: deque[str] = field(default_factory=deque)
    broken: bool = False
    max_body: int | None = None
    requests: list[Request] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        seen = Request(scope["path"], len(body))
        self.requests.append(seen)
        fault = "always-502" if self.broken else (self.script.popleft() if self.script else "")
        if self.max_body is not None and len(body) > self.max_body:
            seen.status = 413
            text = b'{"error":"PayloadTooLarge","message":"the body is above the proxy\'s limit"}'
            await _answer(send, 413, text)
            return

        async def replay() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        if fault in ("", "store-then-503", "store-then-stall"):
            answered: list[Message] = []

            async def keep(message: Message) -> None:
                answered.append(message)
                if message["type"] == "http.response.start":
                    seen.status = message["status"]
                if not fault:
                    await send(message)

            await self.app(scope, replay, keep)
            if fault:
                assert answered[0]["status"] == 202, answered
                seen.status = 503
                if fault == "store-then-stall":
                    # The fault itself, not a wait for something: the client gives up first.
                    await asyncio.sleep(STALL_SECONDS)
                await _answer(send, 503, b'{"error":"ServiceUnavailable","message":"injected"}')
            return
        status = seen.status = int(fault.removeprefix("always-"))
        headers = [(b"retry-after", b"0.2")] if status == 429 else []
        body = b'{"error":"Injected","message":"injected %d"}' % status
        await _answer(send, status, body, headers)

    def reset(self) -> None:
        self.script.clear()
        self.broken = False
        self.max_body = None
        self.requests.clear()

    def event_requests(self) -> list[Request]:
        """The ingest requests seen, in order."""
        return [r for r in self.requests if r.path.endswith("/events")]


async def _answer(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": body})


@dataclass
class Server:
    url: str
    faulty_url: str
    faults: Faults
    bootstrap: Bootstrap
    services: Services
    loop: asyncio.AbstractEventLoop

    def stored(self, bus: str) -> list[dict[str, Any]]:
        """The events of `bus` as the log holds them, read in the server's own loop."""
        ref = BusRef(TenantName(self.bootstrap.tenant), bus)
        read = self.services.stores.event_log.read(ref, 0, 100_000)
        events = asyncio.run_coroutine_threadsafe(read, self.loop).result(30)
        return [msgspec.json.decode(e.body) for e in events]


def dead_url() -> str:
    """A loopback URL where nothing listens: connections are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = Path(tmp_path_factory.mktemp("client")) / "data"
    port, faulty_port = free_port(), free_port()
    settings = load_settings(
        {"data_dir": str(data), "port": port, "max_batch_events": SERVER_MAX_BATCH_EVENTS}
    )
    app = build_app(settings)
    faults = Faults(app)
    main = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    )
    front = uvicorn.Server(
        uvicorn.Config(faults, host="127.0.0.1", port=faulty_port, log_config=None, lifespan="off")
    )
    loop = asyncio.new_event_loop()
    started: list[Services] = []

    async def serve() -> None:
        async def services() -> None:
            started.append(await app.state.lifecycle.wait_started())

        await asyncio.gather(main.serve(), front.serve(), services())

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), name="uvicorn")
    thread.start()
    try:
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                return httpx.get(f"{url}/readyz", timeout=5).status_code == 200 and bool(started)
            except httpx.TransportError:
                return False

        wait_until(ready, what="the server is ready", every=0.05)
        bootstrap = msgspec.json.decode((data / "bootstrap.json").read_bytes(), type=Bootstrap)
        yield Server(url, f"http://127.0.0.1:{faulty_port}", faults, bootstrap, started[0], loop)
    finally:
        main.should_exit = front.should_exit = True
        thread.join(30)
        loop.close()


class Either:
    """The sync or the async client behind one awaitable face: `await api.send(...)`. The sync
    client is called in a thread, as a program using it from a worker thread would."""

    def __init__(self, kind: str, endpoint: str | list[str], key: str, **options: Any) -> None:
        self.kind = kind
        options.setdefault("retries", QUICK)
        self.sync = Client(endpoint, key, **options) if kind == "sync" else None
        self.aio = AsyncClient(endpoint, key, **options) if kind == "async" else None

    def __getattr__(self, name: str) -> Any:
        if self.sync is not None:
            method = getattr(self.sync, name)

            async def in_thread(*args: Any, **kwargs: Any) -> Any:
                return await asyncio.to_thread(method, *args, **kwargs)

            return in_thread
        return getattr(self.aio, name)

    async def close(self) -> None:
        if self.sync is not None:
            self.sync.close()
        if self.aio is not None:
            await self.aio.close()


@dataclass
class Clients:
    kind: str
    server: Server
    made: list[Either] = field(default_factory=list)

    def __call__(
        self, endpoint: str | list[str] | None = None, key: str | None = None, **options: Any
    ) -> Either:
        client = Either(
            self.kind,
            endpoint if endpoint is not None else self.server.url,
            key if key is not None else self.server.bootstrap.admin_key,
            **options,
        )
        self.made.append(client)
        return client


@pytest.fixture(params=["sync", "async"])
async def clients(request: pytest.FixtureRequest, server: Server) -> AsyncIterator[Clients]:
    """Makes clients of one kind (each test runs once with each); closes them afterwards."""
    server.faults.reset()
    made = Clients(request.param, server)
    yield made
    for client in made.made:
        await client.close()

"""Helpers of the target tests: real HTTP receivers on loopback, deliveries, a movable clock."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from stellwerk.refs import TenantName
from stellwerk.seams import Delivery

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Seen:
    """One request as the receiver got it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    # The client's (address, port): the same for requests that shared a keep-alive connection.
    peer: object = None
    query: str = ""  # as it came, percent-encoded


@dataclass
class Receiver:
    """An aiohttp server answering each path with the handler a test put there (200 by default)."""

    host: str
    port: int = 0
    scheme: str = "http"
    handlers: dict[str, Handler] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    # Set at teardown, so handlers that wait "forever" end and the server can stop.
    closing: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str = "/hook") -> str:
        return f"{self.scheme}://{self.host}:{self.port}{path}"

    def on(self, path: str, handler: Handler) -> None:
        self.handlers[path] = handler

    def answer(self, path: str, status: int, body: str = "", **headers: str) -> None:
        async def handler(request: web.Request) -> web.StreamResponse:
            return web.Response(status=status, text=body, headers=headers)

        self.on(path, handler)

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.seen.append(
            Seen(
                request.method,
                request.path,
                dict(request.headers),
                body,
                peer,
                request.query_string,
            )
        )
        handler = self.handlers.get(request.path)
        if handler is None:
            return web.Response(text="ok")
        return await handler(request)


async def start_receiver(
    host: str, *, ssl_context: ssl.SSLContext | None = None
) -> tuple[Receiver, web.AppRunner]:
    receiver = Receiver(host, scheme="http" if ssl_context is None else "https")
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", receiver.dispatch)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    sock = socket.socket()
    sock.bind((host, 0))
    receiver.port = sock.getsockname()[1]
    await web.SockSite(runner, sock, ssl_context=ssl_context).start()
    return receiver, runner


class StaticResolver(AbstractResolver):
    """DNS as an attacker controls it: names answer with whatever address the test says."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        if host not in self.answers:
            raise OSError(f"no such host {host}")
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in self.answers[host]
        ]

    async def close(self) -> None:
        return None


def make_delivery(
    payload: bytes = b'{"specversion":"1.0","id":"ev-1","source":"/shop","type":"order.created"}',
    *,
    event_id: str = "ev-1",
    content_type: str = "application/cloudevents+json",
    attempts: int = 0,
) -> Delivery:
    return Delivery(
        id=1,
        tenant=TenantName("acme"),
        bus="default",
        rule="orders",
        target_id="t1",
        event_id=event_id,
        event_source="/shop",
        position=1,
        recorded_time=datetime(2025, 1, 1, tzinfo=UTC),
        payload=payload,
        content_type=content_type,
        attempts=attempts,
    )


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Silent:
    """A TCP server on loopback that reads requests and never answers."""

    port: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    hung_up: asyncio.Event = field(default_factory=asyncio.Event)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    server: asyncio.Server | None = None

    async def start(self) -> Silent:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        while await reader.read(65536):
            self.arrived.set()
        self.hung_up.set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

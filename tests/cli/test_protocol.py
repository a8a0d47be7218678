"""`JoinedWritesProtocol`: uvicorn's HTTP/1.1 with a response's head and first body part in one
write, over a real loopback socket. What a client sees must be what plain uvicorn sends: whole
answers on a kept-alive connection, pipelined answers in order, the head of a streaming answer
before its body is done, HEAD answers without a body, and an error after the head closes."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import uvicorn
from starlette.types import Receive, Scope, Send
from tests import polling

from stellwerk.cli.protocol import JoinedWritesProtocol

BODY = b'{"accepted":1,"failed":[],"duplicates":0}'


class Streaming:
    """The app: `/stream` sends its head, then its body once `go` is set; `/broken` fails after
    its head; anything else is answered at once with `BODY`."""

    def __init__(self) -> None:
        self.go = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"  # the server runs without a lifespan
        while (await receive()).get("more_body", False):
            pass
        path = scope["path"]
        if path == "/stream":
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"x-part", b"head")]}
            )
            await self.go.wait()
            await send({"type": "http.response.body", "body": b"late"})
            return
        if path == "/broken":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            raise RuntimeError("broken after the head")
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY))]
        await send({"type": "http.response.start", "status": 202, "headers": headers})
        await send({"type": "http.response.body", "body": BODY})


@contextlib.asynccontextmanager
async def served(app: Streaming) -> AsyncIterator[int]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port: int = listener.getsockname()[1]
    config = uvicorn.Config(
        app, http=JoinedWritesProtocol, log_config=None, lifespan="off", access_log=False
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        await polling.eventually(lambda: server.started, what="uvicorn listening", within=30)
        yield port
    finally:
        server.should_exit = True
        await serving
        listener.close()


@contextlib.asynccontextmanager
async def connected(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        await writer.wait_closed()


async def read_answer(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One answer with a Content-Length: its head and its body."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head, await reader.readexactly(length)


def request(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nhost: test\r\ncontent-length: 0\r\n\r\n".encode()


async def test_answers_on_a_kept_alive_connection_and_pipelined_in_order() -> None:
    async with served(Streaming()) as port, connected(port) as (reader, writer):
        for _ in range(3):
            writer.write(request("/one"))
            head, body = await read_answer(reader)
            assert head.startswith(b"HTTP/1.1 202 ")
            assert body == BODY
        # Three requests in one segment: three whole answers, in order.
        writer.write(request("/a") + request("/b") + request("/c"))
        for _ in range(3):
            head, body = await read_answer(reader)
            assert head.startswith(b"HTTP/1.1 202 ")
            assert body == BODY


async def test_a_head_answer_has_no_body_and_the_connection_goes_on() -> None:
    async with served(Streaming()) as port, connected(port) as (reader, writer):
        writer.write(request("/one", "HEAD"))
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 202 ")
        assert b"content-length: %d" % len(BODY) in head.lower()
        writer.write(request("/one"))
        # Had HEAD's answer carried a body, it would be read here instead of the head.
        head, body = await read_answer(reader)
        assert head.startswith(b"HTTP/1.1 202 ")
        assert body == BODY


async def test_a_streaming_answer_sends_its_head_before_its_body_is_ready() -> None:
    app = Streaming()
    async with served(app) as port, connected(port) as (reader, writer):
        writer.write(request("/stream"))
        # The body waits for `go`, which is set only once the head has come.
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert b"x-part: head" in head
        app.go.set()
        assert await reader.readuntil(b"0\r\n\r\n") == b"4\r\nlate\r\n0\r\n\r\n"


async def test_a_failure_after_the_head_sends_the_head_and_closes() -> None:
    async with served(Streaming()) as port, connected(port) as (reader, writer):
        writer.write(request("/broken"))
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        assert await reader.read() == b""  # closed, no body

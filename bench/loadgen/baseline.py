"""The baselines for ingest benchmarks: bare ASGI apps under uvicorn, Stellwerk's floors.

Both run under uvicorn with the settings `stellwerk serve` uses (uvloop, httptools with
Stellwerk's `JoinedWritesProtocol`, one process, no access log, no server header), so that the
server's own cost is the same on both sides of a ratio:

- the bare app reads the body and answers 202: the gap between it and Stellwerk is what
  Stellwerk itself costs per request (routing, auth, limits, decoding, the durable append,
  metrics);
- with `--durable DIR` it is the durable floor: it also decodes the body with msgspec (the
  events as Python objects, as a plain JSON API would) and appends it to one file in `DIR`
  with one `write` and one `fdatasync` per request, on the event loop, before it answers. No
  dedup, no index, no validation, no group commit: what an ack-after-fsync costs at the least.

Run it with `python bench/loadgen/baseline.py --port 8081 [--durable DIR]`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Final

import msgspec
import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stellwerk.cli.protocol import JoinedWritesProtocol

ANSWER: Final = b'{"accepted":1,"failed":[],"duplicates":0}'
_HEADERS: Final = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(ANSWER)).encode()),
]
_decode: Final = msgspec.json.Decoder().decode


async def answer_lifespan(receive: Receive, send: Send) -> None:
    """Acknowledge startup and shutdown, nothing more (also the status bench's bare app)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _http_app(handle: Callable[[Receive, Send], Awaitable[None]]) -> ASGIApp:
    """An app that answers each HTTP request with `handle` and the lifespan with nothing."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
        elif scope["type"] == "http":
            await handle(receive, send)

    return app


async def _body(receive: Receive) -> bytes:
    chunks = []
    more = True
    while more:
        chunk: Message = await receive()
        chunks.append(chunk.get("body", b""))
        more = chunk.get("more_body", False)
    return b"".join(chunks)


async def _answer(send: Send, answer: bytes = ANSWER) -> None:
    headers = (
        _HEADERS if answer is ANSWER else [_HEADERS[0], (b"content-length", b"%d" % len(answer))]
    )
    await send({"type": "http.response.start", "status": 202, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


async def _read_and_answer(receive: Receive, send: Send) -> None:
    await _body(receive)
    await _answer(send)


baseline_app: Final = _http_app(_read_and_answer)


def durable_app(directory: Path) -> ASGIApp:
    """The durable floor: decode, append to `directory/floor.log`, fdatasync, answer."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / "floor.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    async def store_and_answer(receive: Receive, send: Send) -> None:
        body = await _body(receive)
        if not body:  # a readiness probe
            await _answer(send)
            return
        events = _decode(body)
        os.write(fd, body + b"\n")
        os.fdatasync(fd)
        accepted = len(events) if isinstance(events, list) else 1
        await _answer(send, b'{"accepted":%d,"failed":[],"duplicates":0}' % accepted)

    return _http_app(store_and_answer)


def serve_baseline(host: str, port: int, durable: Path | None = None) -> None:
    config = uvicorn.Config(
        baseline_app if durable is None else durable_app(durable),
        host=host,
        port=port,
        loop="uvloop",
        http=JoinedWritesProtocol,
        lifespan="on",
        log_config=None,
        log_level="warning",
        access_log=False,
        server_header=False,
    )
    uvicorn.Server(config).run()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument(
        "--durable", type=Path, help="the durable floor: decode, append here, fdatasync"
    )
    args = parser.parse_args(argv)
    serve_baseline(args.host, args.port, args.durable)


if __name__ == "__main__":
    main()

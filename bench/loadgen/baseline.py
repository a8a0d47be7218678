"""The baseline for ingest benchmarks: a bare ASGI app that reads the body and answers 202.

It runs under uvicorn with the settings `stellwerk serve` uses (uvloop, httptools, one process,
no access log, no server header), so the gap between it and Stellwerk is what Stellwerk itself
costs per request: routing, auth, limits, decoding, the durable append, metrics.

Run it with `python bench/loadgen/baseline.py --port 8081`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import uvicorn
from starlette.types import Message, Receive, Scope, Send

ANSWER = b'{"accepted":1,"failed":[],"duplicates":0}'
_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(ANSWER)).encode()),
]


async def baseline_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        # Lifespan and anything else: acknowledge startup and shutdown, nothing more.
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        return
    more = True
    while more:
        chunk: Message = await receive()
        more = chunk.get("more_body", False)
    await send({"type": "http.response.start", "status": 202, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": ANSWER})


def serve_baseline(host: str, port: int) -> None:
    config = uvicorn.Config(
        baseline_app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
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
    args = parser.parse_args(argv)
    serve_baseline(args.host, args.port)


if __name__ == "__main__":
    main()

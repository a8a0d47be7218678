"""`stellwerk serve --role edge`: a stateless proxy for clients that cannot follow a global
endpoint themselves (curl, other languages). It forwards every request to the endpoint's active
site and, when that site does not answer or answers 5xx, to the other one; the events keep
their ids, so a site that has them already counts them as duplicates.

The edge holds no key of its own: it reads the endpoint's state with the key of the request it
forwards (`GET /v1/endpoints/{name}/state` takes ingest keys), at most once per `STATE_TTL`.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import aiohttp
import msgspec
import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from stellwerk.config import Settings

log = structlog.get_logger("stellwerk.sites")

STATE_TTL: Final = 1.0
STATE_TIMEOUT: Final = 1.0
FORWARD_TIMEOUT: Final = 30.0
# Headers that describe one hop, not the request: never passed on.
_HOP: Final = frozenset(
    {"host", "content-length", "connection", "keep-alive", "transfer-encoding", "upgrade", "te"}
)
_PASSED_BACK: Final = ("content-type", "retry-after", "location")


class _View(msgspec.Struct):
    site: str
    secondary: str
    active: str


class Edge:
    def __init__(self, upstreams: tuple[str, ...], endpoint: str) -> None:
        self.upstreams = tuple(u.rstrip("/") for u in upstreams)
        self.endpoint = endpoint
        self.active = self.upstreams[0]
        self._read_at = -math.inf
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None

    @asynccontextmanager
    async def running(self, _app: Starlette) -> AsyncIterator[None]:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        try:
            yield
        finally:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "the edge is not running"
        return self._session

    async def follow(self, authorization: str | None) -> str:
        """The active site's URL, read again when older than `STATE_TTL` (one reader at a
        time); what the sites answered last when none answers now."""
        loop = asyncio.get_running_loop()
        if authorization is None or loop.time() - self._read_at < STATE_TTL:
            return self.active
        async with self._lock:
            if loop.time() - self._read_at < STATE_TTL:
                return self.active
            self._read_at = loop.time()
            views: list[_View] = []
            urls: dict[str, str] = {}
            for url in self.upstreams:
                try:
                    async with self.session.get(
                        f"{url}/v1/endpoints/{self.endpoint}/state",
                        headers={"authorization": authorization},
                        timeout=aiohttp.ClientTimeout(total=STATE_TIMEOUT),
                    ) as answer:
                        if answer.status != 200:
                            continue
                        view = msgspec.json.decode(await answer.read(), type=_View)
                except (aiohttp.ClientError, TimeoutError, msgspec.DecodeError):
                    continue
                urls[view.site] = url
                views.append(view)
            if views:
                chosen = next((v for v in views if v.site == v.secondary), views[0])
                active = urls.get(chosen.active, self.active)
                if active != self.active:
                    log.info("edge follows the active site", endpoint=self.endpoint, to=active)
                self.active = active
        return self.active

    async def forward(self, request: Request) -> Response:
        body = await request.body()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        first = await self.follow(request.headers.get("authorization"))
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        problems: list[str] = []
        for url in (first, *(u for u in self.upstreams if u != first)):
            try:
                async with self.session.request(
                    request.method,
                    url + target,
                    data=body,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT),
                ) as answer:
                    content = await answer.read()
                    if answer.status >= 500:
                        problems.append(f"{url}: HTTP {answer.status}")
                        continue
                    passed = {k: answer.headers[k] for k in _PASSED_BACK if k in answer.headers}
                    return Response(content, status_code=answer.status, headers=passed)
            except (aiohttp.ClientError, TimeoutError) as exc:
                problems.append(f"{url}: {type(exc).__name__}")
        return JSONResponse(
            {
                "error": "UpstreamUnavailable",
                "message": "no site of the endpoint answered: " + "; ".join(problems),
            },
            status_code=502,
        )


async def _alive(_request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def build_edge_app(settings: Settings) -> Starlette:
    """The edge proxy's app for `--upstream` and `--endpoint`."""
    assert settings.endpoint is not None
    edge = Edge(settings.upstream, settings.endpoint)
    methods = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
    return Starlette(
        routes=[
            Route("/livez", _alive, methods=["GET"]),
            Route("/readyz", _alive, methods=["GET"]),
            Route("/{path:path}", edge.forward, methods=methods),
        ],
        lifespan=edge.running,
    )

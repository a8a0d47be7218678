"""Custom domains: a request whose Host is one of a page's domains gets that page at `/`.

`DomainRoute` sits after every other route, so the API never pays for it: only a request that
no route took asks it, and it answers from a map in memory (no query per request). The map is
read at start, again every `REFRESH_SECONDS`, and at once when a page changes (`Domains.reload`
from the invalidation follower). The request is then served as `/status/{page}{path}`, with
`base` "" so that the page links to `/incidents/...` on its own domain.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Final

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.routing import BaseRoute, Match, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from stellwerk.statuspages.tables import domains as domains_table

log = structlog.get_logger(__name__)

REFRESH_SECONDS: Final = 5.0
BASE_KEY: Final = "stellwerk.status_base"  # where the page lives, as its links need it
_PAGE_KEY: Final = "stellwerk.status_domain_page"
_ASKED_KEY: Final = "stellwerk.status_domain_path"  # the path before it was rewritten


class Domains:
    """Which page each custom host name belongs to, in memory."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self.pages: dict[str, str] = {}
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()

    async def load(self) -> None:
        async with self._engine.connect() as conn:
            rows = await conn.execute(sa.select(domains_table.c.host, domains_table.c.page))
            self.pages = {row.host: row.page for row in rows}

    def reload(self) -> None:
        """Read the map again soon (a page changed: its domains may have)."""
        self._wake.set()

    async def run(self) -> None:
        """The gateway's duty: keep the map fresh until `stop`."""
        while not self._stopping.is_set():
            try:
                await self.load()
            except Exception:
                log.warning("reading the status pages' custom domains failed", exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), REFRESH_SECONDS)
            self._wake.clear()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()


def host_of(scope: Scope) -> str:
    """The request's host name, lower-cased, without its port."""
    for name, value in scope["headers"]:
        if name == b"host":
            host: str = value.decode("latin-1").strip().lower()
            if host.startswith("["):  # an IPv6 literal is never a page's domain
                return host
            return host.rsplit(":", 1)[0] if ":" in host else host
    return ""


class DomainRoute(BaseRoute):
    """Serves the public routes of a page at the root of each of its custom domains."""

    def __init__(
        self,
        pages: Callable[[Scope], Mapping[str, str] | None],
        routes: Sequence[BaseRoute],
        default: ASGIApp,
    ) -> None:
        """`pages(scope)`: the map of the process answering (None while it is not ready)."""
        self._pages = pages
        self._router = Router(list(routes), default=default)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http":
            return Match.NONE, {}
        pages = self._pages(scope)
        if not pages:
            return Match.NONE, {}
        page = pages.get(host_of(scope))
        if page is None:
            return Match.NONE, {}
        return Match.FULL, {_PAGE_KEY: page}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        page = scope[_PAGE_KEY]
        path = scope["path"]
        inner = "" if path == "/" else path
        rewritten = dict(scope)
        rewritten["path"] = f"/status/{page}{inner}"
        rewritten["raw_path"] = rewritten["path"].encode()
        rewritten[BASE_KEY] = ""
        rewritten[_ASKED_KEY] = path
        await self._router(rewritten, receive, send)


def base_of(request: Request, page: str) -> str:
    """Where the page lives for this request: `/status/{page}`, or `` on its custom domain.
    Its links and forms start with it, so that a reader on the domain stays there."""
    base: str = request.scope.get(BASE_KEY, f"/status/{page}")
    return base


def asked_path(request: Request) -> str:
    """The path as the reader asked for it (`/history` on a custom domain, not the
    `/status/{page}/history` it is served as): where to send them back to."""
    path: str = request.scope.get(_ASKED_KEY, request.url.path)
    return path

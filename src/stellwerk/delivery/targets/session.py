"""The process's outgoing HTTP sessions: one pooled aiohttp session per address policy.

Why one session for all targets rather than one per host or per target: aiohttp already keeps
idle keep-alive connections per (host, port, TLS) inside one connector, so a single session
reuses connections exactly as well as many would, with one DNS cache and one set of TLS
contexts. Isolation between targets comes from each target's own semaphore, not from the
connector, which is why the connector has no overall limit: a global cap would let one target
that hangs hold connections every other target needs. Open connections are bounded by the sum
of the targets' concurrency budgets.

The session is keyed by `AddressPolicy` because the connector's DNS cache holds addresses that
passed that policy's guard; sharing it between a strict and a lax policy would leak. A process
normally has one policy (`--allow-private-targets` or not), so one session.

Cookies are never kept: a shared cookie jar would carry one tenant's cookies to another's request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
from aiohttp.abc import AbstractResolver

from stellwerk.delivery.targets.ssrf import AddressPolicy, GuardedResolver

USER_AGENT = "Stellwerk-Webhooks/1"
KEEPALIVE_SECONDS = 30.0


class SessionPool:
    """Lazily created, shared `ClientSession`s; `close()` once when the process stops.

    `resolver_factory` builds the DNS resolver the SSRF guard wraps (tests pass one that answers
    a made-up name with 127.0.0.1, the way a rebinding attacker's DNS would).
    """

    def __init__(self, *, resolver_factory: Callable[[], AbstractResolver] | None = None) -> None:
        self._resolver_factory = resolver_factory
        self._sessions: dict[AddressPolicy, aiohttp.ClientSession] = {}
        self._closed = False

    def session(self, policy: AddressPolicy) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("the session pool is closed")
        session = self._sessions.get(policy)
        if session is None:
            inner = self._resolver_factory() if self._resolver_factory is not None else None
            connector = aiohttp.TCPConnector(
                limit=0,
                limit_per_host=0,
                keepalive_timeout=KEEPALIVE_SECONDS,
                resolver=GuardedResolver(policy, inner),
            )
            session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                headers={"User-Agent": USER_AGENT},
                # Proxies from the environment would bypass the address checks entirely.
                trust_env=False,
            )
            self._sessions[policy] = session
        return session

    async def close(self) -> None:
        self._closed = True
        sessions, self._sessions = list(self._sessions.values()), {}
        await asyncio.gather(*(session.close() for session in sessions))

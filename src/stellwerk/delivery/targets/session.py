"""The process's outgoing HTTP: one delivery transport and one aiohttp session per address policy.

Deliveries go through a `Transport` (libcurl by default); OAuth token requests, off the hot path,
through aiohttp. One pool serves every target: isolation comes from each target's semaphore, so
there is no overall cap on connections in use (one that hung would starve the rest). Keyed by
`AddressPolicy`, because DNS caches hold what that policy's guard passed. Never cookies (they
would cross tenants), never proxies from the environment (they bypass the address checks).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

import aiohttp
from aiohttp.abc import AbstractResolver

from stellwerk.delivery.targets.curl import USER_AGENT, CurlTransport
from stellwerk.delivery.targets.curl_multi import SUPPORTED as CURL_SUPPORTED
from stellwerk.delivery.targets.dns import GuardedAddresses
from stellwerk.delivery.targets.ssrf import AddressPolicy, GuardedResolver
from stellwerk.delivery.targets.transport import AiohttpTransport, HttpClient, Transport

KEEPALIVE_SECONDS = 30.0
DEFAULT_CLIENT: HttpClient = "curl" if CURL_SUPPORTED else "aiohttp"


class SessionPool:
    """Lazily created, shared transports and `ClientSession`s; `close()` once at the end.

    `resolver_factory` builds the DNS resolver the SSRF guard wraps (tests pass one that answers
    a made-up name with 127.0.0.1, the way a rebinding attacker's DNS would). `ca_file` is a PEM
    file of the certificate authorities to trust instead of the system's (Python's default
    verify paths, so `SSL_CERT_FILE` and `SSL_CERT_DIR` apply). `client` picks the
    delivery transport: `curl` (the default on Linux) or `aiohttp` (the reference it replaced,
    and the default elsewhere).
    """

    def __init__(
        self,
        *,
        resolver_factory: Callable[[], AbstractResolver] | None = None,
        ca_file: str | None = None,
        client: HttpClient = DEFAULT_CLIENT,
    ) -> None:
        if client not in ("curl", "aiohttp"):
            raise ValueError(f"unknown HTTP client {client!r}; use 'curl' or 'aiohttp'")
        if client == "curl" and not CURL_SUPPORTED:
            raise ValueError("the curl client runs on Linux (epoll) only; use 'aiohttp'")
        self._resolver_factory = resolver_factory
        self._ca_file = ca_file
        self.client = client
        self._sessions: dict[AddressPolicy, aiohttp.ClientSession] = {}
        self._transports: dict[AddressPolicy, Transport] = {}
        self._closed = False

    def transport(self, policy: AddressPolicy) -> Transport:
        """The delivery transport for targets with this address policy."""
        transport = self._transports.get(policy)
        if transport is None:
            self._check_open()
            if self.client == "aiohttp":
                transport = AiohttpTransport(self.session(policy))
            else:
                if self._ca_file is not None:
                    ca_file, ca_dir = self._ca_file, None
                else:
                    paths = ssl.get_default_verify_paths()
                    ca_file, ca_dir = paths.cafile, paths.capath
                transport = CurlTransport(
                    policy,
                    GuardedAddresses(self._guarded_resolver(policy)),
                    ca_file=ca_file,
                    ca_dir=ca_dir,
                )
            self._transports[policy] = transport
        return transport

    def session(self, policy: AddressPolicy) -> aiohttp.ClientSession:
        """The aiohttp session for requests off the delivery path (OAuth tokens)."""
        self._check_open()
        session = self._sessions.get(policy)
        if session is None:
            connector = aiohttp.TCPConnector(
                limit=0,
                limit_per_host=0,
                keepalive_timeout=KEEPALIVE_SECONDS,
                resolver=self._guarded_resolver(policy),
                ssl=ssl.create_default_context(cafile=self._ca_file) if self._ca_file else True,
            )
            session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                headers={"User-Agent": USER_AGENT},
                trust_env=False,
            )
            self._sessions[policy] = session
        return session

    def _guarded_resolver(self, policy: AddressPolicy) -> GuardedResolver:
        inner = self._resolver_factory() if self._resolver_factory is not None else None
        return GuardedResolver(policy, inner)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the session pool is closed")

    async def close(self) -> None:
        self._closed = True
        transports, self._transports = list(self._transports.values()), {}
        await asyncio.gather(*(transport.close() for transport in transports))
        sessions, self._sessions = list(self._sessions.values()), {}
        await asyncio.gather(*(session.close() for session in sessions))

"""Fixtures of the target tests: a receiver on loopback, the process's session pool.

Every test that takes `client` (or `pool`) runs with each delivery transport: libcurl, the
default, and aiohttp, the reference it replaced. Both must behave the same.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from tests.delivery.targets.support import Receiver, Silent, StaticResolver, start_receiver

from stellwerk.delivery.targets import HttpClient, SessionPool


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found, runner = await start_receiver("127.0.0.1")
    try:
        yield found
    finally:
        found.closing.set()
        await runner.cleanup()


@pytest.fixture(params=["curl", "aiohttp"])
def client(request: pytest.FixtureRequest) -> HttpClient:
    chosen: HttpClient = request.param
    return chosen


@pytest.fixture
async def pool(client: HttpClient) -> AsyncIterator[SessionPool]:
    sessions = SessionPool(client=client)
    try:
        yield sessions
    finally:
        await sessions.close()


@pytest.fixture
async def named_pool(client: HttpClient) -> AsyncIterator[tuple[SessionPool, StaticResolver]]:
    """A pool whose DNS answers `hooks.example.test` with 127.0.0.1, as a rebinding attacker's
    would (or as a test's own name for the receiver on loopback)."""
    resolver = StaticResolver({"hooks.example.test": ["127.0.0.1"]})
    pool = SessionPool(resolver_factory=lambda: resolver, client=client)
    try:
        yield pool, resolver
    finally:
        await pool.close()


@pytest.fixture
async def silent() -> AsyncIterator[Silent]:
    """A server on loopback that takes requests and never answers."""
    found = await Silent().start()
    try:
        yield found
    finally:
        await found.stop()

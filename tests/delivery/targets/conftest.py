"""Fixtures of the target tests: a receiver on loopback, the process's session pool."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from tests.delivery.targets.support import Receiver, start_receiver

from stellwerk.delivery.targets import SessionPool


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found, runner = await start_receiver("127.0.0.1")
    try:
        yield found
    finally:
        found.closing.set()
        await runner.cleanup()


@pytest.fixture
async def pool() -> AsyncIterator[SessionPool]:
    sessions = SessionPool()
    try:
        yield sessions
    finally:
        await sessions.close()

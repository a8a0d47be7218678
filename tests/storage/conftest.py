"""Event log fixtures, parametrised by backend so every backend runs the same suite.

The backends are named in `eventlog_support.BACKENDS` (`sqlite`, and `nats` on a real
`nats-server` of the test's own); each must pass every test in `test_eventlog_contract.py`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.nats_support import NatsServer
from tests.storage.eventlog_support import BACKENDS, LogFactory, MovableClock

from stellwerk.seams import EventLog


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture(params=BACKENDS)
def log_factory(request: pytest.FixtureRequest, tmp_path: Path, clock: MovableClock) -> LogFactory:
    if request.param == "nats":
        server: NatsServer = request.getfixturevalue("nats_server")
        return LogFactory(request.param, tmp_path, clock, nats_url=server.url)
    return LogFactory(request.param, tmp_path, clock)


@pytest.fixture
async def event_log(log_factory: LogFactory) -> AsyncIterator[EventLog]:
    log = log_factory()
    async with log:
        yield log

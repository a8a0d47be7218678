"""Event log fixtures, parametrised by backend so every backend runs the same suite.

Only `sqlite` exists now; a NATS JetStream backend adds its name to `eventlog_support.BACKENDS`
and a branch to `LogFactory.__call__`, and must then pass every test in `test_eventlog_contract.py`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.storage.eventlog_support import BACKENDS, LogFactory, MovableClock

from stellwerk.storage.eventlog import EventLog


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture(params=BACKENDS)
def log_factory(request: pytest.FixtureRequest, tmp_path: Path, clock: MovableClock) -> LogFactory:
    return LogFactory(request.param, tmp_path, clock)


@pytest.fixture
async def event_log(log_factory: LogFactory) -> AsyncIterator[EventLog]:
    log = log_factory()
    async with log:
        yield log

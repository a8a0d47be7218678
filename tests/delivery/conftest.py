"""Delivery queue fixtures, parametrised by backend so every backend runs the same suite.

Only `sqlite` exists now; a NATS JetStream backend adds its name to `queue_support.BACKENDS` and a
branch to `QueueFactory.__call__`, and must then pass `test_queue_contract.py` and the worker tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.delivery.queue_support import BACKENDS, QueueFactory
from tests.storage.eventlog_support import MovableClock

from stellwerk.storage.deliveries import DeliveryQueue


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture(params=BACKENDS)
def queue_factory(
    request: pytest.FixtureRequest, tmp_path: Path, clock: MovableClock
) -> QueueFactory:
    return QueueFactory(request.param, tmp_path, clock)


@pytest.fixture
async def queue(queue_factory: QueueFactory) -> AsyncIterator[DeliveryQueue]:
    async with queue_factory() as opened:
        yield opened

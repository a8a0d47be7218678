"""Delivery queue fixtures, parametrised by backend so every backend runs the same suite.

The backends are named in `queue_support.BACKENDS` (`sqlite`, and `nats` on a real `nats-server`
of the test's own); each must pass the queue contract, the erase contract and the worker tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.delivery.queue_support import BACKENDS, QueueFactory
from tests.nats_support import NatsServer
from tests.storage.eventlog_support import MovableClock

from stellwerk.seams import DeliveryQueue


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture(params=BACKENDS)
def queue_factory(
    request: pytest.FixtureRequest, tmp_path: Path, clock: MovableClock
) -> QueueFactory:
    if request.param == "nats":
        server: NatsServer = request.getfixturevalue("nats_server")
        return QueueFactory(request.param, tmp_path, clock, nats_url=server.url)
    return QueueFactory(request.param, tmp_path, clock)


@pytest.fixture
async def queue(queue_factory: QueueFactory) -> AsyncIterator[DeliveryQueue]:
    async with queue_factory() as opened:
        yield opened

"""Two processes on one pipeline.db: one routes while the other leases and acks, as the pipeline
and gateway processes of embedded mode share the file."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from tests.storage.eventlog_support import ACME_DEFAULT, T0

from stellwerk.refs import BusRef, TenantName
from stellwerk.storage.queue.sqlite import SqliteDeliveryQueue
from stellwerk.storage.sqlite import PIPELINE_FILE

CHILD = Path(__file__).with_name("queue_writer_child.py")
COUNT = 2_000
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
async def test_deliveries_routed_by_another_process_are_each_leased_once(tmp_path: Path) -> None:
    path = tmp_path / PIPELINE_FILE
    async with SqliteDeliveryQueue(path) as queue:
        child = await asyncio.create_subprocess_exec(
            sys.executable, str(CHILD), str(path), str(COUNT),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        seen: list[int] = []
        try:
            async with asyncio.timeout(120):
                while len(seen) < COUNT:
                    leased = await queue.lease(T0, 100, 600)
                    for delivery in leased:
                        seen.append(delivery.position)
                        await queue.ack(delivery.id)
                    if not leased:
                        await asyncio.sleep(0.005)  # a poll, as the worker's
            out, err = await child.communicate()
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()
        assert child.returncode == 0, err.decode()
        assert out.decode().split() == ["done"]
        assert sorted(seen) == list(range(1, COUNT + 1))
        assert await queue.lease(T0, 100, 600) == []
        assert await queue.cursor(ACME_DEFAULT) == COUNT
        assert await queue.cursor(BusRef(TenantName("acme"), "quiet")) == COUNT

"""Making streams on a JetStream cluster that is not whole: still forming, or a node down.

A three-node cluster started with one node missing cannot place an R3 stream ("no suitable peers
for placement"); the stores still start and take writes on streams with the replicas the nodes
up can hold, and the streams get all three once the node comes.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import nats
import pytest
import structlog
from tests import polling
from tests.delivery.queue_support import new_delivery
from tests.nats_support import NatsCluster
from tests.storage.eventlog_support import ACME_DEFAULT, T0, MovableClock, new_event

from stellwerk.refs import TenantName
from stellwerk.seams import AppendStatus, DeliveryQueueError, EventLogError
from stellwerk.storage.eventlog.jetstream import JetStreamEventLog
from stellwerk.storage.jetstream import Connection, ensure_stream, log_config, streams
from stellwerk.storage.queue.jetstream import JetStreamDeliveryQueue

pytestmark = pytest.mark.slow
DEADLINE = 60.0
T = TypeVar("T")


async def eventually(probe: Callable[[], Awaitable[T]]) -> T:
    """`probe()`'s first truthy answer that is not a store error (the cluster heals)."""
    return await polling.eventually(
        probe, within=DEADLINE, every=0.1, ignoring=(DeliveryQueueError, EventLogError)
    )


async def replicas_of(urls: list[str], stream: str) -> int:
    nc = await nats.connect(urls)
    try:
        reply = await nc.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=5)
        info: dict[str, Any] = json.loads(reply.data)
        return int(info["config"]["num_replicas"])
    finally:
        await nc.close()


@pytest.fixture
def two_of_three(tmp_path: Path) -> Iterator[NatsCluster]:
    """A three-node cluster of which the third node has not started (yet)."""
    cluster = NatsCluster.create(tmp_path / "nats-cluster")
    up = cluster.servers[:2]
    try:
        for server in up:
            server.spawn()
        for server in up:
            server.wait_ready()
            server.started = True
        cluster.wait_whole()
        yield cluster
    finally:
        for server in cluster.servers:
            server.kill()


@pytest.fixture
def brief_patience(monkeypatch: pytest.MonkeyPatch) -> None:
    """A placement that cannot have every replica takes fewer after 0.3 s instead of 3 s, and a
    stream made with fewer looks for the missing ones every 0.2 s instead of after 1, 2, 4 ...
    s: shown is that the stores do both, not how patient they are. (The product's waits are
    sized for a cluster that is still forming; with them this test took 13.5 s, 9.6 of them
    in placements it knew would fail.)"""
    monkeypatch.setattr(streams, "PLACEMENT_PATIENCE_SECONDS", 0.3)
    monkeypatch.setattr(streams, "_RESTORE_FIRST_PAUSE", 0.2)
    monkeypatch.setattr(streams, "_RESTORE_LONGEST_PAUSE", 0.2)


@pytest.mark.usefixtures("brief_patience")
async def test_with_a_node_missing_the_stores_start_on_the_nodes_up_and_get_every_replica_later(
    two_of_three: NatsCluster,
) -> None:
    cluster = two_of_three
    up = ",".join(cluster.urls[:2])
    clock = MovableClock()
    router = JetStreamDeliveryQueue(up, replicas=3, clock=clock)
    worker = JetStreamDeliveryQueue(up, replicas=3, clock=clock)
    with structlog.testing.capture_logs() as lines:
        async with router, worker, JetStreamEventLog(up, replicas=3) as log:
            streams = [
                router.layout.members_stream,
                router.layout.table_stream,
                router.layout.attempts_stream,  # the delivery history's
            ]
            for stream in streams:
                assert await replicas_of(cluster.urls[:2], stream) == 2

            # A tenant's stream is made at its first event, with the node still missing.
            first = await eventually(lambda: log.append([new_event("e1")]))
            assert [r.status for r in first] == [AppendStatus.STORED]
            streams.append(log.layout.stream(TenantName("acme")))
            assert await replicas_of(cluster.urls[:2], streams[-1]) == 2

            await router.route(ACME_DEFAULT, 3, [new_delivery(p) for p in (1, 2, 3)])
            leased = await eventually(lambda: worker.lease(T0, 10, 60.0))
            assert sorted(d.position for d in leased) == [1, 2, 3]

            await cluster.servers[2].start_async()
            for stream in streams:
                await eventually(lambda s=stream: _has_three(cluster.urls, s))  # type: ignore[misc]
            await worker.ack(leased[0].id)
            assert [r.status for r in await log.append([new_event("e2")])] == [AppendStatus.STORED]
    degraded = [line for line in lines if line["event"] == "stream_replicas_degraded"]
    assert {line["stream"] for line in degraded} == set(streams)
    assert all((line["replicas"], line["wanted"]) == (2, 3) for line in degraded)
    restored = {line["stream"] for line in lines if line["event"] == "stream_replicas_restored"}
    assert restored == set(streams)


async def _has_three(urls: list[str], stream: str) -> bool:
    return await replicas_of(urls, stream) == 3


async def test_a_stream_made_while_the_cluster_is_still_forming_waits_for_it(
    tmp_path: Path,
) -> None:
    cluster = NatsCluster.create(tmp_path / "nats-cluster")
    try:
        for server in cluster.servers:
            server.spawn()  # not waited for: the stream is asked for at once
        conn = Connection(cluster.url, request_timeout=2.0)
        await conn.open()
        try:
            window = timedelta(minutes=1)
            config = log_config("forming", ["forming.>"], replicas=3, dedup_window=window)
            await ensure_stream(conn, config)
            info = await conn.api("$JS.API.STREAM.INFO.forming")
            assert (info["cluster"] or {}).get("leader")
            await eventually(lambda: _has_three(cluster.urls, "forming"))
        finally:
            await conn.close()
    finally:
        for server in cluster.servers:
            server.kill()

"""Faults under load in scale-out mode (issue #7), each role a `stellwerk serve` process: a NATS
node, a router and a delivery worker killed with SIGKILL, PostgreSQL out of reach for a while.

What must hold: every event a gateway acknowledged (202) reaches the target at least once. A
503 while a store is out is allowed; the client retries it, as a real client would. Duplicates
are allowed (delivery is at least once) and printed, so a run shows how many a fault costs.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import nats
import pytest
from tests.cli.server import ServerProcess
from tests.e2e.receiving import Received
from tests.e2e.scale_out import (
    Load,
    ScaleOut,
    first_through,
    keys_of,
    load_batch,
    metric_total,
    put_rule,
)
from tests.nats_support import NatsCluster, NatsServer
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.slow  # starts processes

EVENTS = 3000
DELIVERED_WITHIN = 75.0  # past the 60 s delivery lease a failed settle waits out
CAUGHT_UP_WITHIN = 30.0
LEASE_SECONDS = "5"
KEY_CACHE_SECONDS = 1  # 5 unless set: the wait before ingest needs the database in an outage
MATCHED = "stellwerk_matched_events_total"
QUEUE_KV = "KV_stellwerk_delivery_queue"


def route_all_to(gateway: ServerProcess, url: str) -> str:
    """A rule that sends every load event to `url`; returns the ingest key."""
    keys = keys_of(gateway)
    put_rule(
        gateway,
        keys["admin_key"],
        "all",
        {"pattern": {"type": ["load"]}, "targets": [{"id": "hook", "type": "http", "url": url}]},
    )
    return keys["ingest_key"]


def warm_up(gateway: ServerProcess, ingest_key: str, received: Received) -> None:
    """One event through every role before the load (ids above the load's), so faults hit a
    platform in full flow."""
    first_through(gateway, ingest_key, received, EVENTS)


def assert_all_delivered(
    received: Received, load: Load, label: str, workers: list[ServerProcess]
) -> None:
    """Every acknowledged event arrived; print how many arrived more than once. On a failure,
    say what the live workers' queues hold (pending, in flight) and what they finished."""
    wanted = set(load.acknowledged)
    started = time.monotonic()
    arrived = received.wait_for(lambda r: wanted <= r.ids.keys(), DELIVERED_WITHIN)
    missing = wanted - received.ids.keys()
    if not arrived:
        seen = {
            worker.url: {
                name: metric_total(worker, name)
                for name in ("stellwerk_delivery_queue_depth", "stellwerk_invocations_total")
            }
            for worker in workers
            if worker.process.poll() is None
        }
        raise AssertionError(
            f"{len(missing)} acknowledged events never arrived, e.g. {sorted(missing)[:5]}; "
            f"live workers' queue depth and deliveries finished: {seen}"
        )
    duplicates = sum(count - 1 for count in received.ids.values() if count > 1)
    print(
        f"{label}: {len(wanted)} acknowledged, all delivered "
        f"({time.monotonic() - started:.1f} s after the load ended), "
        f"{duplicates} duplicates, client retries {dict(load.retries)}"
    )


# -- a NATS node ---------------------------------------------------------------------------------


async def _stream_leaders(urls: list[str]) -> dict[str, str | None]:
    nc = await nats.connect(servers=urls)
    try:
        return {
            info.config.name or "": info.cluster.leader if info.cluster else None
            for info in await nc.jetstream().streams_info()
        }
    finally:
        await nc.close()


async def _lagging_streams(node: NatsServer) -> tuple[int, list[str]]:
    """How many streams there are, and those whose copy on `node` is not current with lag 0, as
    each stream's leader sees it. Every stream is R3 on three nodes, so each has a copy there.
    Asked through `node` itself, so the answer also shows that it serves JetStream again."""
    nc = await nats.connect(node.url, allow_reconnect=False)
    try:
        streams = await nc.jetstream().streams_info()
        lagging = []
        for info in streams:
            cluster = info.cluster
            assert cluster is not None, f"{info.config.name} is not clustered"
            if cluster.leader == node.name:
                continue
            peer = next((p for p in cluster.replicas or [] if p.name == node.name), None)
            if peer is None or not peer.current or peer.offline or (peer.lag or 0) > 0:
                lagging.append(f"{info.config.name}: {peer}")
        return len(streams), lagging
    finally:
        await nc.close()


def wait_caught_up(node: NatsServer, within: float) -> tuple[float, int]:
    """Poll until every stream's copy on `node` is current with lag 0; return how long that
    took and how many streams there are."""
    started = time.monotonic()
    lagging: list[str] = ["(not asked yet)"]
    while time.monotonic() - started < within:
        try:
            streams, lagging = asyncio.run(_lagging_streams(node))
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            lagging = [repr(exc)]
        else:
            if not lagging:
                return time.monotonic() - started, streams
        time.sleep(0.1)  # the poll's interval
    raise AssertionError(f"{node.name} did not catch up within {within} s: {lagging}")


def test_a_nats_node_killed_under_load_loses_no_acknowledged_event_and_catches_up(
    nats_cluster: NatsCluster,
    postgres_url: str,
    tmp_path: Path,
    threaded_receiver: tuple[Received, str],
) -> None:
    received, url = threaded_receiver
    scale_out = ScaleOut(nats_cluster.url, postgres_url, tmp_path, options=("--nats-replicas", "3"))
    with (
        scale_out.role("gateway") as gateway,
        scale_out.together(["router"], ["delivery"]) as (_router, worker),
    ):
        ingest_key = route_all_to(gateway, url)
        warm_up(gateway, ingest_key, received)
        load = Load(gateway, ingest_key, EVENTS).start()
        assert load.wait_for(EVENTS // 3, 60), "the load never got going"
        # The node to kill leads the delivery queue's lanes (the KV-shaped stream), so the
        # queue must carry on under a new leader. This once stalled delivery: the worker's
        # per-delivery error tracebacks filled the output pipe the test did not read, and the
        # worker blocked on its log (now a file), and a failed lease could end its loop.
        leaders = asyncio.run(_stream_leaders(nats_cluster.urls))
        victim = next(node for node in nats_cluster.servers if node.name == leaders[QUEUE_KV])
        killed_at = len(load.acknowledged)
        victim.kill()
        print(f"stream leaders {leaders}; killed {victim.name} after {killed_at} acknowledged")
        assert load.wait_for(2 * EVENTS // 3, 60), (
            f"ingest stalled without {victim.name}: {len(load.acknowledged)} acknowledged"
        )
        print(f"{len(load.acknowledged) - killed_at} acknowledged with {victim.name} down")
        victim.start()
        load.join(60)
        assert_all_delivered(received, load, "NATS node killed", [worker])
        took, streams = wait_caught_up(victim, CAUGHT_UP_WITHIN)
        assert streams >= len(leaders) > 0
        print(
            f"{victim.name} current with lag 0 in all {streams} streams {took:.1f} s after the "
            "deliveries were done"
        )


# -- a router and a delivery worker ---------------------------------------------------------------


def busiest(processes: list[ServerProcess], metric: str) -> ServerProcess:
    """The process that did the most of the work `metric` counts: the one worth killing."""
    return max(processes, key=lambda process: metric_total(process, metric))


def test_a_router_and_a_delivery_worker_killed_under_load_lose_no_acknowledged_event(
    nats_server: NatsServer,
    postgres_url: str,
    tmp_path: Path,
    threaded_receiver: tuple[Received, str],
) -> None:
    received, url = threaded_receiver
    scale_out = ScaleOut(nats_server.url, postgres_url, tmp_path)
    # Short leases: the survivors take over sooner, which is what is shown, not how soon.
    lease = ("--delivery-lease-seconds", LEASE_SECONDS)
    bus_lease = ("--lease-ttl-seconds", LEASE_SECONDS)
    with (
        scale_out.role("gateway") as gateway,
        scale_out.together(
            ["router", *bus_lease],
            ["router", *bus_lease],
            ["delivery", *lease],
            ["delivery", *lease],
        ) as (router_a, router_b, worker_a, worker_b),
    ):
        ingest_key = route_all_to(gateway, url)
        warm_up(gateway, ingest_key, received)
        load = Load(gateway, ingest_key, EVENTS).start()
        assert load.wait_for(EVENTS // 3, 60), "the load never got going"
        router = busiest([router_a, router_b], MATCHED)
        worker = busiest([worker_a, worker_b], "stellwerk_invocation_attempts_total")
        survivor = router_b if router is router_a else router_a
        matched_by_survivor = metric_total(survivor, MATCHED)
        router.terminate(signal.SIGKILL)
        worker.terminate(signal.SIGKILL)
        killed, delivered = time.monotonic(), len(received.ids)
        print(
            f"killed a router and a worker after {len(load.acknowledged)} acknowledged, "
            f"{delivered - 1} delivered"
        )
        # Deliveries go on: from the other worker at once, and through the other router once
        # it routes the bus (at once, or when the dead router's lease on it runs out).
        assert received.wait_for(lambda r: len(r.ids) > delivered + 100, DELIVERED_WITHIN)
        print(f"100 more delivered {time.monotonic() - killed:.1f} s after the kill")
        while metric_total(survivor, MATCHED) <= matched_by_survivor:
            assert time.monotonic() - killed < DELIVERED_WITHIN, "the other router never routed"
            time.sleep(0.1)  # the poll's interval
        print(f"the other router routed again {time.monotonic() - killed:.1f} s after the kill")
        load.join(60)
        assert_all_delivered(received, load, "router and worker killed", [worker_a, worker_b])


# -- PostgreSQL out of reach ----------------------------------------------------------------------


def test_readiness_follows_postgresql_going_away_and_coming_back_without_a_restart(
    nats_server: NatsServer, postgres_url: str, tmp_path: Path
) -> None:
    parts = urlsplit(postgres_url)
    with TcpProxy(parts.port or 5432) as proxy:
        proxied = parts._replace(netloc=f"postgres@127.0.0.1:{proxy.port}").geturl()
        scale_out = ScaleOut(nats_server.url, proxied, tmp_path)
        # A key stays cached this long: ingest needs the database only after it.
        with scale_out.role("gateway", "--key-cache-seconds", str(KEY_CACHE_SECONDS)) as gateway:
            ingest = {"Authorization": f"Bearer {keys_of(gateway)['ingest_key']}"}
            events = f"{gateway.url}/v1/buses/default/events"
            assert httpx.post(events, json=load_batch(0, 1), headers=ingest).status_code == 202

            proxy.cut()
            cut = time.monotonic()
            answer = gateway.wait_until("/readyz", 503, timeout=15).json()
            assert answer["reason"] == "control plane unreachable", answer
            # A key not cached yet needs the database at once: the API refuses with a 503 too.
            admin = {"Authorization": f"Bearer {keys_of(gateway)['admin_key']}"}
            listed = httpx.get(f"{gateway.url}/v1/buses", headers=admin, timeout=15)
            assert listed.status_code == 503, listed.text
            print(f"/readyz 503 {time.monotonic() - cut:.2f} s after the cut: {answer}")
            # The outage lasts until the gateway's cached key has expired and ingest needs the
            # database: from then on it must refuse with a 503 a client retries.
            n = 1
            while (
                during := httpx.post(events, json=load_batch(n, 1), headers=ingest, timeout=15)
            ).status_code == 202:
                assert time.monotonic() - cut < 15, "ingest never needed the database"
                n += 1
            print(
                f"ingest answered {during.status_code} {time.monotonic() - cut:.2f} s after the "
                f"cut ({n - 1} accepted from cache before): {during.text[:200]}"
            )
            assert during.status_code == 503, during.text
            assert during.headers["retry-after"] == "1"
            assert gateway.wait_until("/readyz", 503, timeout=5)
            proxy.restore()
            restored = time.monotonic()
            gateway.wait_until("/readyz", 200, timeout=30)
            print(f"/readyz 200 {time.monotonic() - restored:.2f} s after the restore")
            after = httpx.post(events, json=load_batch(n, 1), headers=ingest, timeout=15)
            assert after.status_code == 202, after.text
            assert gateway.process.poll() is None, "the gateway restarted"

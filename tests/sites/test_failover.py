"""A global endpoint over two real sites: its spec on both, the primary SIGKILLed under load in
`sync` mode (no acknowledged event lost, the secondary active within seconds), and the failback
once the primary is back (the events only the secondary took are replicated to it first).

Each run prints what it counted: acknowledged, found on the other site, lost, duplicated, RTO."""

from __future__ import annotations

import signal
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.cli.server import running_server
from tests.conftest import free_port
from tests.polling import wait_until
from tests.sites.support import FLAGS, Receiver, Site, pair, receiving, two_sites

import stellwerk

pytestmark = pytest.mark.slow

POLICY = {
    "latency_p99_ms": 500,
    "window_seconds": 5,
    "evaluations": 2,
    "recovery_seconds": 2,
    # A loaded test machine may take a while to fsync; the loss check is about a dead peer.
    "sync_timeout_ms": 5000,
}


def event(n: int, prefix: str = "k") -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"{prefix}-{n}",
        "source": "urn:load",
        "type": "t",
        "data": {"n": n},
    }


def endpoint(site: Site) -> dict[str, Any]:
    answer = site.api("GET", "/v1/endpoints/orders")
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def sync_count(metrics: str, name: str) -> float:
    """A counter's value for site b in a Prometheus text exposition (0 when absent)."""
    for line in metrics.splitlines():
        if line.startswith(name + "{") and 'site="b"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def paired_with_endpoint(stack: ExitStack, root: Path, replication: str) -> tuple[Site, Site]:
    """Sites a and b, paired, with endpoint `orders` (primary a) on both."""
    a, b = stack.enter_context(two_sites(root))
    pair(a, b)
    spec = {
        "primary": "a",
        "secondary": "b",
        "buses": ["default"],
        "replication": replication,
        "health": POLICY,
    }
    answer = a.api("PUT", "/v1/endpoints/orders", json=spec)
    assert answer.status_code == 201, answer.text
    assert answer.json()["mirrored"] is True
    return a, b


def matched(site: Site) -> float:
    """How many events the site's router matched to a rule (its /metrics, every process)."""
    text = httpx.get(f"{site.url}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("stellwerk_matched_events_total{")
    )


def put_rule(site: Site, receiver: Receiver) -> None:
    rule = {
        "pattern": {"source": ["urn:load"]},
        "targets": [{"id": "hook", "type": "http", "url": receiver.url}],
    }
    answer = site.api("PUT", "/v1/buses/default/rules/load", json=rule)
    assert answer.status_code in (200, 201), answer.text


def ids_on(site: Site, count: int) -> list[str]:
    return [e["id"] for e in site.events("default", count)]


def test_sigkill_of_the_primary_in_sync_mode_loses_no_acknowledged_event_and_fails_back(
    tmp_path: Path,
) -> None:
    with ExitStack() as stack:
        a, b = paired_with_endpoint(stack, tmp_path, "sync")
        on_b = endpoint(b)
        assert (on_b["state"], on_b["active"], on_b["site"]) == ("healthy", "a", "b")
        receiver = stack.enter_context(receiving())
        put_rule(a, receiver)
        wait_until(
            lambda: b.api("GET", "/v1/buses/default/rules/load").status_code,
            what="the rule mirrored to b",
            accept=lambda status: status == 200,
        )

        acknowledged: list[str] = []
        stop = threading.Event()

        def load() -> None:
            n = 0
            while not stop.is_set():
                try:
                    sent = a.send("default", [event(n)])
                except httpx.TransportError:
                    return  # the primary is gone
                if sent.status_code == 202:
                    acknowledged.append(f"k-{n}")
                n += 1

        loader = threading.Thread(target=load)
        loader.start()
        wait_until(lambda: len(acknowledged) >= 100, what="100 events acknowledged by a")
        first = acknowledged[:100]
        wait_until(
            receiver.count,
            what="a to deliver the first 100",
            accept=lambda ids: all(i in ids for i in first),
        )
        # Only the active site routes: b stores every event, delivers none.
        assert matched(b) == 0
        assert max(receiver.count().values()) == 1
        metrics = httpx.get(f"{a.url}/metrics", timeout=10).text
        a.server.terminate(signal.SIGKILL)
        killed = time.monotonic()
        # Every acknowledgement so far waited for b: none was degraded to async.
        assert sync_count(metrics, "stellwerk_site_sync_events_total") >= 100
        assert sync_count(metrics, "stellwerk_site_sync_degraded_total") == 0
        loader.join(timeout=30)
        stop.set()

        failed_over = wait_until(
            lambda: endpoint(b),
            what="b to take over",
            accept=lambda e: e["state"] == "failed-over" and e["active"] == "b",
            within=30,
        )
        taken = b.send("default", [event(0, "after")])
        assert taken.status_code == 202
        rto = time.monotonic() - killed
        states = [t["state"] for t in failed_over["history"]]
        assert states == ["healthy", "failing-over", "failed-over"]

        stored = set(ids_on(b, len(acknowledged) + 1 + 2))  # + the transitions' events
        lost = [i for i in acknowledged if i not in stored]
        found = b.events("default", len(acknowledged) + 3)
        duplicated = len(found) - len({(e["id"], e["source"]) for e in found})
        print(
            f"\nsync failover: acknowledged={len(acknowledged)} on_b={len(stored)} "
            f"lost={len(lost)} duplicated={duplicated} rto={rto:.1f}s"
        )
        assert lost == []
        assert duplicated == 0
        assert rto < 10

        # b routes now: every acknowledged event reaches the receiver, from a before the kill
        # or from b after it; an event both routed is delivered twice (at least once).
        expected = [*acknowledged, "after-0"]
        delivered = wait_until(
            receiver.count,
            what="every acknowledged event delivered",
            accept=lambda ids: all(i in ids for i in expected),
        )
        twice = sum(1 for i in expected if delivered[i] > 1)
        print(f"delivered: {len(expected)} events, {twice} of them twice (routed on both sites)")
        assert matched(b) > 0

        # A client of the endpoint reads its state and sends to the active site, with a's key
        # (mirrored to b), past the dead primary.
        with stellwerk.Client(
            [a.url, b.url], key=a.bootstrap.ingest_key, global_endpoint="orders", timeout=2
        ) as client:
            state = client.endpoint_state("orders")
            assert (state.state, state.active, state.site) == ("failed-over", "b", "b")
            sent = client.send("default", [event(n, "client") for n in range(10)])
            assert sent.accepted == 10

        # The primary comes back on its data directory: the endpoint fails back once it has
        # been healthy for recovery_seconds and has what b took meanwhile.
        restarted = running_server(
            a.server.data_dir, int(a.url.rsplit(":", 1)[1]), "--site", "a", *FLAGS
        )
        stack.enter_context(restarted)
        back = wait_until(
            lambda: endpoint(b),
            what="the endpoint to fail back to a",
            accept=lambda e: e["state"] == "healthy" and e["active"] == "a",
            within=60,
        )
        assert [t["state"] for t in back["history"]][-2:] == ["failing-back", "healthy"]
        assert a.events("default", 10_000, until="after-0")[-1]["id"] == "after-0"
        wait_until(
            lambda: endpoint(a),
            what="a to learn of the failback",
            accept=lambda e: e["state"] == "healthy" and len(e["history"]) >= 5,
        )
        # a routes again, from where b had routed: what b delivered is not delivered again
        # wholesale (at most the last second's events twice).
        assert a.send("default", [event(0, "back")]).status_code == 202
        delivered = wait_until(
            receiver.count,
            what="a to deliver after the failback",
            accept=lambda ids: "back-0" in ids,
        )
        clients = [f"client-{n}" for n in range(10)]
        assert all(delivered[i] >= 1 for i in clients)
        print(f"after failback: {sum(1 for i in clients if delivered[i] > 1)} of 10 twice")
        assert max(delivered[i] for i in [*clients, "after-0", "back-0"]) <= 2
        # An event acknowledged before the kill may come three times, each copy accounted for:
        # a delivered it but its ack died with a, b delivered it from a's delivery position,
        # and a, back, delivered what its own queue still held (at least once on each site).
        assert max(delivered[i] for i in acknowledged) <= 3


def test_a_hung_primary_fails_over_and_back_and_the_client_follows_the_active_site(
    tmp_path: Path,
) -> None:
    with ExitStack() as stack:
        a, b = paired_with_endpoint(stack, tmp_path, "async")
        edge = stack.enter_context(
            running_server(
                tmp_path / "edge",
                free_port(),
                "--role",
                "edge",
                "--upstream",
                f"{a.url},{b.url}",
                "--endpoint",
                "orders",
            )
        )

        def through_edge(n: int) -> int:
            return httpx.post(
                f"{edge.url}/v1/buses/default/events",
                headers={"Authorization": f"Bearer {a.bootstrap.ingest_key}"},
                json=event(n, "edge"),
                timeout=30,
            ).status_code

        assert through_edge(0) == 202
        client = stack.enter_context(
            stellwerk.Client(
                [a.url, b.url], key=a.bootstrap.ingest_key, global_endpoint="orders", timeout=2
            )
        )
        wait_until(
            lambda: (
                httpx.get(
                    f"{b.url}/v1/endpoints/orders/state",
                    headers={"Authorization": f"Bearer {a.bootstrap.ingest_key}"},
                ).status_code
            ),
            what="a's key to work on b",
            accept=lambda s: s == 200,
        )
        before = client.send("default", [event(n, "before") for n in range(5)])
        assert client.endpoint_state("orders").active == "a"

        a.server.terminate(signal.SIGSTOP)  # hung: its port still takes connections
        stopped = time.monotonic()
        try:
            wait_until(
                lambda: endpoint(b),
                what="b to take over from the hung primary",
                accept=lambda e: e["active"] == "b",
                within=30,
            )
            rto = time.monotonic() - stopped
            state = client.endpoint_state("orders")
            assert (state.state, state.active) == ("failed-over", "b")
            during = client.send("default", [event(n, "during") for n in range(5)])
            assert during.accepted == 5
            assert through_edge(1) == 202  # the edge follows the endpoint to b
        finally:
            a.server.terminate(signal.SIGCONT)
        print(f"\nhung primary: rto={rto:.1f}s")
        assert rto < 10

        wait_until(
            lambda: endpoint(b),
            what="the endpoint to fail back to a",
            accept=lambda e: e["state"] == "healthy" and e["active"] == "a",
            within=60,
        )
        on_a = a.events("default", 10_000, until="during-4")
        ids = [e["id"] for e in on_a]
        assert set(before.ids + during.ids) <= set(ids)
        assert len(ids) == len(set(ids))  # nothing stored twice
        assert client.endpoint_state("orders").active == "a"
        assert {"edge-0", "edge-1"} <= {
            e["id"] for e in a.events("default", 10_000, until="edge-1")
        }
        wait_until(
            lambda: through_edge(2), accept=lambda s: s == 202, what="the edge after failback"
        )
        assert "edge follows the active site" in edge.output()

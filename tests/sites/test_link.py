"""The link between two sites cut and restored (a relay that drops every connection): both sites
keep accepting, and once the link is back each has every event of the other, none twice."""

from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.polling import wait_until
from tests.sites.support import (
    SECRET,
    Site,
    pair,
    receiving,
    settle,
    start_site,
    sync_endpoint,
    two_sites,
)
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.slow


def batch(prefix: str, count: int) -> list[dict[str, Any]]:
    return [
        {"specversion": "1.0", "id": f"{prefix}-{n}", "source": "urn:link", "type": "t"}
        for n in range(count)
    ]


def pending(site: Site, peer: str) -> list[str]:
    found: list[str] = site.api("GET", f"/v1/peers/{peer}").json()["pending"]
    return found


def test_a_cut_link_leaves_both_sites_accepting_and_they_reconcile_when_it_returns(
    tmp_path: Path,
) -> None:
    with two_sites(tmp_path) as (a, b), TcpProxy(port(b)) as to_b, TcpProxy(port(a)) as to_a:
        for here, there, relay in ((a, b, to_b), (b, a, to_a)):
            body = {"url": f"http://127.0.0.1:{relay.port}", "secret": SECRET}
            assert here.api("PUT", f"/v1/peers/{there.name}", json=body).status_code == 201
        settle(a, b)
        assert a.send("default", batch("before", 5)).status_code == 202
        wait_until(
            lambda: pending(a, "b"), what="b to have a's first events", accept=lambda p: p == []
        )

        to_a.cut()
        to_b.cut()
        assert a.send("default", batch("a", 20)).status_code == 202
        assert b.send("default", batch("b", 20)).status_code == 202
        assert pending(a, "b") == ["default"]
        assert pending(b, "a") == ["default"]

        to_a.restore()
        to_b.restore()
        for here, there in ((a, b), (b, a)):
            wait_until(
                lambda here=here, there=there: pending(here, there.name),  # type: ignore[misc]
                what=f"{here.name} to have replicated to {there.name} after the cut",
                accept=lambda p: p == [],
            )
        wanted = {e["id"] for e in batch("before", 5) + batch("a", 20) + batch("b", 20)}
        for site in (a, b):
            ids = [e["id"] for e in site.events("default", len(wanted))]
            assert set(ids) == wanted, site.name
            assert len(ids) == len(set(ids)), site.name
        print(f"\nlink cut: accepted {len(wanted)} on both sides, lost 0, duplicated 0")


def port(site: Site) -> int:
    return int(site.url.rsplit(":", 1)[1])


def test_a_slow_primary_fails_over_without_a_crash_and_back_once_it_is_quick_again(
    tmp_path: Path,
) -> None:
    with two_sites(tmp_path) as (a, b), TcpProxy(port(a)) as to_a:
        assert a.api("PUT", "/v1/peers/b", json={"url": b.url, "secret": SECRET}).status_code == 201
        body = {"url": f"http://127.0.0.1:{to_a.port}", "secret": SECRET}
        assert b.api("PUT", "/v1/peers/a", json=body).status_code == 201
        settle(a, b)
        spec = {
            "primary": "a",
            "secondary": "b",
            "buses": ["default"],
            "health": {"latency_p99_ms": 300, "evaluations": 2, "recovery_seconds": 1},
        }
        assert a.api("PUT", "/v1/endpoints/orders", json=spec).status_code == 201

        to_a.delay = 0.5  # each way: a probe takes a second, over the 300 ms the policy allows
        slow = wait_until(
            lambda: b.api("GET", "/v1/endpoints/orders").json(),
            what="b to take over from the slow primary",
            accept=lambda e: e["active"] == "b",
        )
        assert "failed evaluations of a" in slow["history"][-1]["reason"]
        assert a.send("default", batch("slow", 3)).status_code == 202  # a still answers
        to_a.delay = 0.0
        wait_until(
            lambda: b.api("GET", "/v1/endpoints/orders").json(),
            what="the endpoint back on a once it is quick",
            accept=lambda e: e["state"] == "healthy" and e["active"] == "a",
        )
        assert "Traceback" not in a.server.output() + b.server.output()


def test_a_primary_whose_deliveries_fall_behind_fails_over_by_its_own_signals(
    tmp_path: Path,
) -> None:
    with two_sites(tmp_path) as (a, b), receiving() as receiver:
        pair(a, b)
        spec = {
            "primary": "a",
            "secondary": "b",
            "buses": ["default"],
            "health": {"latency_p99_ms": 1500, "recovery_seconds": 3600},
        }
        assert a.api("PUT", "/v1/endpoints/orders", json=spec).status_code == 201
        # One delivery at a time to a receiver that takes 0.1 s: the 60th waits 6 s for its
        # first attempt, while a answers its probes at once.
        receiver.delay = 0.1
        target = {"id": "hook", "type": "http", "url": receiver.url, "concurrency": 1}
        rule = {"pattern": {"source": ["urn:link"]}, "targets": [target]}
        assert a.api("PUT", "/v1/buses/default/rules/slow", json=rule).status_code == 201
        assert a.send("default", batch("behind", 60)).status_code == 202
        moved = wait_until(
            lambda: b.api("GET", "/v1/endpoints/orders").json(),
            what="b to take over from the primary that falls behind",
            accept=lambda e: e["active"] == "b",
        )
        reason = moved["history"][-1]["reason"]
        print(f"\nfailed over: {reason}")
        assert "p99 ingestion to invocation" in reason


def test_sync_requests_that_append_while_one_is_in_flight_go_to_the_peer_together(
    tmp_path: Path,
) -> None:
    # The link to b holds each chunk back 0.2 s: the first request's peer request is in flight
    # for 0.4 s at least, and the requests sent beside it wait for the next one, together.
    with two_sites(tmp_path) as (a, b), TcpProxy(port(b)) as to_b:
        body = {"url": f"http://127.0.0.1:{to_b.port}", "secret": SECRET}
        assert a.api("PUT", "/v1/peers/b", json=body).status_code == 201
        assert b.api("PUT", "/v1/peers/a", json={"url": a.url, "secret": SECRET}).status_code == 201
        settle(a, b)
        sync_endpoint(a, "b")
        to_b.delay = 0.2
        count = 12
        with ThreadPoolExecutor(count) as pool:
            answers = list(pool.map(lambda n: a.send("default", batch(f"g{n}", 1)), range(count)))
        assert [r.status_code for r in answers] == [202] * count
        metrics = httpx.get(f"{a.url}/metrics", timeout=10).text
        # Every request waited for b's acknowledgement, and fewer peer requests carried them.
        assert counter(metrics, "stellwerk_site_sync_events_total") == count
        assert counter(metrics, "stellwerk_site_sync_degraded_total") == 0
        assert 1 <= counter(metrics, "stellwerk_site_sync_requests_total") < count
        stored = {e["id"] for e in b.events("default", count)}
        assert stored == {f"g{n}-0" for n in range(count)}


def test_the_sync_path_sends_the_bus_from_the_cursor_and_moves_it_without_the_replicator(
    tmp_path: Path,
) -> None:
    # a runs as two processes, and its pipeline process (the replicator's) is stopped: only
    # the gateway's sync path can put events on b and move a's replication cursor for b.
    with ExitStack() as stack:
        a = start_site(stack, tmp_path, "a", "--processes", "2")
        b = start_site(stack, tmp_path, "b")
        pair(a, b)
        wait_until(lambda: pending(a, "b"), what="a to have sent b everything", accept=_none)
        pipeline = role_process(a, "pipeline")
        os.kill(pipeline, signal.SIGSTOP)
        try:
            # Not replicated synchronously (no endpoint yet), and no replicator to send them.
            assert a.send("default", batch("before", 3)).status_code == 202
            assert pending(a, "b") == ["default"]
            sync_endpoint(a, "b")
            assert a.send("default", batch("sync", 1)).status_code == 202
            metrics = httpx.get(f"{a.url}/metrics", timeout=10).text
            assert counter(metrics, "stellwerk_site_sync_events_total") == 1
            assert counter(metrics, "stellwerk_site_sync_degraded_total") == 0
            # The sync request carried its own event; moving the cursor past it, the sync path
            # sent the three before it (b stores them after it), and the cursor says so.
            ids = {"before-0", "before-1", "before-2", "sync-0"}
            assert ids <= {e["id"] for e in b.events("default", 100, until="before-2")}
            wait_until(lambda: pending(a, "b"), what="a's cursor for b to move", accept=_none)
        finally:
            os.kill(pipeline, signal.SIGCONT)
        assert a.send("default", batch("after", 1)).status_code == 202
        stored = [e["id"] for e in b.events("default", 100, until="after-0")]
        assert sorted(i for i in stored if i in ids) == sorted(ids)  # each once


def _none(found: list[str]) -> bool:
    return not found


def role_process(site: Site, role: str) -> int:
    """The pid of the site's child process that runs `role` (`stellwerk serve --role ROLE`)."""
    parent = site.server.process.pid
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) != parent:
            continue
        if b"--role" in command and command[command.index(b"--role") + 1] == role.encode():
            return int(entry.name)
    raise AssertionError(f"{site.name} has no {role} process")


def counter(metrics: str, name: str) -> float:
    """A counter's value for the peer b in a Prometheus text exposition (0 when absent)."""
    for line in metrics.splitlines():
        if line.startswith(name + "{") and 'site="b"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0

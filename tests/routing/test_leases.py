"""Leases on a real `nats-server`: names spread over holders, never held by two at once.

A watch samples every holder's `holds` for every name every few milliseconds for the whole of
each test (all holders live in this event loop, so a sample is one instant) and fails the test
if two ever held one name together, including a holder that died and still believes in its
leases until they lapse. Waits are on conditions, with short leases (`TTL`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from typing import Any

import pytest
from tests.nats_support import NatsCluster, NatsServer
from tests.polling import eventually
from tests.routing.lease_support import crash

from stellwerk.refs import BusRef, TenantName
from stellwerk.seams import Leases, LocalLeases, lease_name, rendezvous_winner, while_held
from stellwerk.storage.leases import JetStreamLeases

TTL = 1.5
NAMES = [lease_name("router", BusRef(TenantName("acme"), f"b{n}")) for n in range(12)]


class Watch:
    """Samples `holds` of every holder for every name; remembers any name held twice."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = names
        self.holders: list[JetStreamLeases] = []
        self.overlaps: list[tuple[str, list[str]]] = []
        self.samples = 0

    async def run(self) -> None:
        while True:
            for name in self.names:
                both = [h.holder for h in self.holders if h.holds(name)]
                if len(both) > 1:
                    self.overlaps.append((name, both))
            self.samples += 1
            await asyncio.sleep(0.005)

    def owners(self) -> dict[str, list[str]]:
        return {n: [h.holder for h in self.holders if h.holds(n)] for n in self.names}

    def covered(self) -> bool:
        """Every name held by exactly one holder."""
        return all(len(owners) == 1 for owners in self.owners().values())


@pytest.fixture
async def watch() -> AsyncIterator[Watch]:
    watch = Watch(NAMES)
    task = asyncio.create_task(watch.run())
    try:
        yield watch
    finally:
        task.cancel()
        await asyncio.wait([task])
        for holder in watch.holders:
            await holder.close()
    assert watch.samples > 10
    assert not watch.overlaps, f"held by two at once: {watch.overlaps[:5]}"


async def holder(
    server: NatsServer | NatsCluster,
    watch: Watch,
    name: str,
    names: Iterable[str] = NAMES,
    replicas: int = 1,
) -> JetStreamLeases:
    leases = JetStreamLeases(server.url, holder=name, ttl=TTL, replicas=replicas)
    wanted = list(names)
    leases.want(lambda: wanted)
    await leases.start()
    watch.holders.append(leases)
    return leases


def timed(start: float) -> float:
    return time.monotonic() - start


def test_both_kinds_are_leases() -> None:
    seam: list[Leases] = [LocalLeases(), JetStreamLeases("nats://127.0.0.1:1")]
    assert LocalLeases().holds("router/acme/default")
    assert all(s.ttl > 0 for s in seam)


def test_rendezvous_moves_only_the_names_of_a_member_that_joins() -> None:
    names = [f"router/acme/b{n}" for n in range(1000)]
    before = {n: rendezvous_winner(n, ["a", "b"]) for n in names}
    after = {n: rendezvous_winner(n, ["a", "b", "c"]) for n in names}
    moved = [n for n in names if before[n] != after[n]]
    assert all(after[n] == "c" for n in moved)
    assert 250 < len(moved) < 420  # about a third
    assert 400 < sum(w == "a" for w in before.values()) < 600


async def test_two_then_three_holders_share_the_names_and_rebalance(
    nats_server: NatsServer, watch: Watch
) -> None:
    first = await holder(nats_server, watch, "h1")
    second = await holder(nats_server, watch, "h2")
    await eventually(lambda: watch.covered() and first.held() and second.held())
    third = await holder(nats_server, watch, "h3")
    # The third takes over the names it wins, which the others give up.
    await eventually(lambda: watch.covered() and third.held())
    members = ["h1", "h2", "h3"]
    expected = {n: [rendezvous_winner(n, members)] for n in NAMES}
    await eventually(lambda: watch.owners() == expected)


async def test_a_dead_holder_loses_its_names_within_ttl_and_grace(
    nats_server: NatsServer, watch: Watch
) -> None:
    first = await holder(nats_server, watch, "h1")
    second = await holder(nats_server, watch, "h2")
    await eventually(lambda: watch.covered() and first.held() and second.held())
    lost = second.held()
    started = time.monotonic()
    await crash(second)
    await eventually(lambda: first.held() == set(NAMES))
    # Seen unchanged for ttl (+ a round to notice, a round for the member to drop out).
    assert timed(started) < TTL + first.grace + 3 * first.interval
    assert lost


async def test_close_hands_the_names_over_at_once(nats_server: NatsServer, watch: Watch) -> None:
    first = await holder(nats_server, watch, "h1")
    second = await holder(nats_server, watch, "h2")
    await eventually(lambda: watch.covered() and first.held() and second.held())
    started = time.monotonic()
    await second.close()
    await eventually(lambda: first.held() == set(NAMES))
    assert timed(started) < TTL  # no waiting for anything to expire


async def test_a_holder_that_stops_wanting_a_name_gives_it_up(
    nats_server: NatsServer, watch: Watch
) -> None:
    wanted = list(NAMES)
    first = JetStreamLeases(nats_server.url, holder="h1", ttl=TTL)
    first.want(lambda: wanted)
    await first.start()
    watch.holders.append(first)
    second = await holder(nats_server, watch, "h2")
    await eventually(watch.covered)
    del wanted[6:]
    await eventually(lambda: first.held() <= set(NAMES[:6]) and watch.covered())
    assert second.held() >= set(NAMES[6:])


async def test_wake_takes_a_newly_wanted_name_without_waiting_for_the_round(
    nats_server: NatsServer,
) -> None:
    # Rounds every 20 s: only `wake` can get the name claimed within the test's few seconds.
    leases = JetStreamLeases(nats_server.url, holder="h1", ttl=60.0)
    wanted = [NAMES[0]]
    leases.want(lambda: wanted)
    await leases.start()
    try:
        await eventually(lambda: leases.holds(NAMES[0]))
        wanted.append(NAMES[1])
        leases.wake()
        await eventually(lambda: leases.holds(NAMES[1]), within=5.0)
    finally:
        await leases.close()


async def test_a_server_restart_leaves_no_name_held_twice(
    nats_server: NatsServer, watch: Watch
) -> None:
    first = await holder(nats_server, watch, "h1")
    second = await holder(nats_server, watch, "h2")
    await eventually(lambda: watch.covered() and first.held() and second.held())
    nats_server.kill()
    # Without JetStream nothing is renewed: every lease lapses, none is taken twice.
    await eventually(lambda: not first.held() and not second.held())
    await nats_server.start_async()
    await eventually(lambda: watch.covered() and first.held() and second.held())


async def test_an_r3_cluster_losing_a_node_leaves_no_name_held_twice(
    nats_cluster: NatsCluster, watch: Watch
) -> None:
    first = await holder(nats_cluster, watch, "h1", replicas=3)
    second = await holder(nats_cluster, watch, "h2", replicas=3)
    await eventually(lambda: watch.covered() and first.held() and second.held())
    assert first._conn is not None
    info = await first._conn.api(f"$JS.API.STREAM.INFO.KV_{first.bucket}")
    leader = next(s for s in nats_cluster.servers if s.name == info["cluster"]["leader"])
    leader.kill()  # the stream's leader: no writes until the other two elect one
    await eventually(lambda: watch.covered() and first.held() and second.held())
    await leader.start_async()  # and it comes back, behind the others
    await eventually(lambda: watch.covered() and first.held() and second.held())


async def test_while_held_runs_the_body_in_exactly_one_holder(
    nats_server: NatsServer, watch: Watch
) -> None:
    running: list[str] = []
    starts: list[str] = []

    def body_of(who: str) -> Callable[[], Coroutine[Any, Any, None]]:
        async def body() -> None:
            assert not running, f"{who} started while {running} ran"
            running.append(who)
            starts.append(who)
            try:
                await asyncio.Event().wait()
            finally:
                running.remove(who)

        return body

    holders = [await holder(nats_server, watch, f"h{n}", names=[]) for n in range(3)]
    watch.names = ["scheduler"]
    jobs = {
        h.holder: asyncio.create_task(while_held(h, "scheduler", body_of(h.holder)))
        for h in holders
    }
    try:
        await eventually(lambda: len(running) == 1)
        # Its holder closes (the job first, then the leases): another one takes over at once.
        first = next(h for h in holders if h.holder == running[0])
        jobs[first.holder].cancel()
        await asyncio.wait([jobs[first.holder]])
        await first.close()
        await eventually(lambda: len(running) == 1)
        # That one dies: its job stops when the lease lapses, a third starts after expiry.
        second = next(h for h in holders if h.holder == running[0])
        await crash(second)
        await eventually(lambda: not running)
        await eventually(lambda: len(running) == 1)
        assert len(set(starts)) == 3
    finally:
        for job in jobs.values():
            job.cancel()
        await asyncio.wait(jobs.values())
        for job in jobs.values():
            assert job.cancelled() or job.exception() is None

"""The JetStream event log's own details, on real `nats-server`s: names, replicas, restarts.

The behaviour every backend shares is in `test_eventlog_contract.py`; these tests cover what
only this backend has: how names become subjects, stream settings, a server killed under load,
several processes (gateways) on one stream, and the slack between their clocks.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import nats
import pytest
from hypothesis import given
from hypothesis import strategies as st
from nats.aio.client import Client
from tests.nats_support import NatsCluster, NatsServer
from tests.storage.eventlog_support import ACME_DEFAULT, T0, MovableClock, new_event

from stellwerk.names import NAME_RULE
from stellwerk.refs import BusRef, TenantName
from stellwerk.seams import AppendStatus, LogOverloaded, NewEvent
from stellwerk.storage.eventlog.jetstream import JetStreamEventLog
from stellwerk.storage.jetstream import Layout, message_id, token
from stellwerk.storage.jetstream.names import name_of

RESTART_DEADLINE = 20.0


@pytest.fixture
async def client(nats_server: NatsServer) -> AsyncIterator[Client]:
    """A plain NATS connection, to look at the streams the log made."""
    nc = await nats.connect(nats_server.url)
    yield nc
    await nc.close()


async def js_api(nc: Client, subject: str, request: object = None) -> dict[str, Any]:
    payload = b"" if request is None else json.dumps(request).encode()
    answer: dict[str, Any] = json.loads((await nc.request(subject, payload, timeout=5)).data)
    return answer


@given(st.from_regex(NAME_RULE, fullmatch=True), st.from_regex(NAME_RULE, fullmatch=True))
def test_every_name_has_its_own_token_and_comes_back_from_it(a: str, b: str) -> None:
    for name in (a, b):
        tok = token(name)
        assert name_of(tok) == name
        assert not set(tok) & set(".*> \t/\\")
    # Apart even on a case-insensitive file system, where stream names become folders.
    assert (token(a).lower() == token(b).lower()) == (a == b)


def test_tokens_are_readable_for_plain_names_and_escape_the_rest() -> None:
    assert token("orders-eu") == "orders-eu"
    assert token("Acme.eu_1") == "_41cme_2Eeu_5F1"
    layout = Layout("sw")
    assert layout.stream(TenantName("acme.eu")) == "sw_events_acme_2Eeu"
    assert layout.events_subject(TenantName("acme.eu"), "a.b") == "sw.events.acme_2Eeu.a_2Eb"
    assert layout.marks_subject_of("sw.events.acme_2Eeu.a_2Eb") == "sw.marks.acme_2Eeu.a_2Eb"
    with pytest.raises(ValueError, match="namespace"):
        Layout("has.dot")


def test_message_ids_tell_buses_sources_and_ids_apart() -> None:
    ids = {
        message_id("a.b", "c", "d"),
        message_id("a", "b.c", "d"),
        message_id("a", "b", "c.d"),
        message_id("b", "a", "d"),
    }
    assert len(ids) == 4
    assert all(len(i) == 22 for i in ids)


async def test_names_with_dots_dashes_underscores_and_capitals_stay_apart(
    nats_server: NatsServer, client: Client
) -> None:
    names = [TenantName(n) for n in ["a.b", "a_b", "a-b", "A.b", "a_2Eb"]]
    async with JetStreamEventLog(nats_server.url, namespace="enc") as log:
        await log.append([new_event(f"{t}/{b}", tenant=t, bus=b) for t in names for b in names])
        for tenant in names:
            for bus in names:
                stored = await log.read(BusRef(tenant, bus))
                assert [(e.tenant, e.bus, e.id) for e in stored] == [
                    (tenant, bus, f"{tenant}/{bus}")
                ]

    streams = await js_api(client, "$JS.API.STREAM.NAMES")
    assert sorted(streams["streams"]) == sorted(Layout("enc").stream(t) for t in names)
    info = await js_api(
        client,
        f"$JS.API.STREAM.INFO.{Layout('enc').stream(TenantName('a.b'))}",
        {"subjects_filter": ">"},
    )
    assert sorted(info["state"]["subjects"]) == sorted(
        f"enc.events.a_2Eb.{token(b)}" for b in names
    )


async def test_streams_take_the_replicas_and_dedup_window_asked_for(
    nats_server: NatsServer, client: Client
) -> None:
    async with JetStreamEventLog(
        nats_server.url, namespace="cfg", dedup_window=timedelta(hours=2)
    ) as log:
        await log.append([new_event("e1")])
    info = await js_api(client, f"$JS.API.STREAM.INFO.{Layout('cfg').stream(TenantName('acme'))}")
    config = info["config"]
    assert config["num_replicas"] == 1
    assert config["duplicate_window"] == 2 * 3600 * 10**9
    assert config["allow_direct"] is True
    assert config["storage"] == "file"
    assert config["subjects"] == ["cfg.events.acme.*", "cfg.marks.acme.*"]

    # A process with another window takes the stream over with its own.
    async with JetStreamEventLog(
        nats_server.url, namespace="cfg", dedup_window=timedelta(hours=3)
    ) as log:
        (again,) = await log.append([new_event("e1")])
    assert again.status is AppendStatus.DUPLICATE
    info = await js_api(client, f"$JS.API.STREAM.INFO.{Layout('cfg').stream(TenantName('acme'))}")
    assert info["config"]["duplicate_window"] == 3 * 3600 * 10**9


async def test_odd_attribute_values_survive_the_headers(nats_server: NatsServer) -> None:
    event = new_event('id with\r\nnewline, ünïcode and "quotes"', source="/s\tsource")
    odd = NewEvent(event.tenant, event.bus, event.id, event.source, "t\n", "sub\x00j", event.body)
    async with JetStreamEventLog(nats_server.url) as log:
        await log.append([odd])
        (stored,) = await log.read(ACME_DEFAULT)
    assert (stored.id, stored.source, stored.type, stored.subject) == (
        odd.id,
        odd.source,
        "t\n",
        "sub\x00j",
    )


async def test_messages_stellwerk_did_not_write_are_skipped(
    nats_server: NatsServer, client: Client
) -> None:
    async with JetStreamEventLog(nats_server.url) as log:
        await log.append([new_event("e1")])
        await client.request(
            Layout().events_subject(TenantName("acme"), "default"), b"{}", timeout=5
        )
        await log.append([new_event("e2")])
        assert [e.id for e in await log.read(ACME_DEFAULT)] == ["e1", "e2"]


async def test_last_position_outlives_the_erasure_of_a_bus_newest_event(
    nats_server: NatsServer,
) -> None:
    async with JetStreamEventLog(nats_server.url) as log:
        appended = await log.append([new_event(f"e{i}", data={"user": f"u{i}"}) for i in range(3)])
        erased = await log.erase(TenantName("acme"), "default", b'"u2"', lambda event: True)
        assert [e.id for e in erased] == ["e2"]
        assert [e.id for e in await log.read(ACME_DEFAULT)] == ["e0", "e1"]
        assert await log.last_position(ACME_DEFAULT) == appended[-1].position


async def test_too_many_events_in_flight_is_overload(nats_server: NatsServer) -> None:
    async with JetStreamEventLog(nats_server.url, max_pending_events=10) as log:
        first, second = await asyncio.gather(
            log.append([new_event(f"a{i}") for i in range(10)]),
            log.append([new_event("b")]),
            return_exceptions=True,
        )
        assert isinstance(first, list)
        assert isinstance(second, LogOverloaded)
        # One batch larger than the bound goes through when nothing else waits.
        assert len(await log.append([new_event(f"c{i}") for i in range(25)])) == 25


async def test_two_gateways_store_a_key_once(nats_server: NatsServer) -> None:
    async with (
        JetStreamEventLog(nats_server.url) as one,
        JetStreamEventLog(nats_server.url) as two,
    ):
        results = await asyncio.gather(
            *(
                log.append([new_event("same"), new_event(f"own{n}")])
                for n, log in enumerate([one, two, one, two])
            )
        )
        stored = [r[0] for r in results if r[0].status is AppendStatus.STORED]
        assert len(stored) == 1
        assert {r[0].position for r in results} == {stored[0].position}
        assert [e.id for e in await two.read(ACME_DEFAULT)].count("same") == 1


async def test_time_windows_find_events_of_a_gateway_whose_clock_lags(
    nats_server: NatsServer,
) -> None:
    ahead, behind = MovableClock(T0 + timedelta(seconds=5)), MovableClock(T0)
    async with (
        JetStreamEventLog(nats_server.url, clock=ahead) as fast,
        JetStreamEventLog(nats_server.url, clock=behind) as slow,
    ):
        await fast.append([new_event("fast")])
        await slow.append([new_event("slow")])  # stored later, recorded 5 s earlier

        window = await slow.read_window(ACME_DEFAULT, T0, T0 + timedelta(seconds=1))
        assert [e.id for e in window] == ["slow"]
        window = await slow.read_window(ACME_DEFAULT, T0, T0 + timedelta(seconds=6))
        assert [e.id for e in window] == ["fast", "slow"]


async def _append_until_killed(
    log: JetStreamEventLog, server: NatsServer, kill_after: int
) -> dict[str, int]:
    """Append batches; SIGKILL the server once `kill_after` events are acknowledged; return
    every acknowledged event (id -> position), including batches acknowledged meanwhile."""
    acked: dict[str, int] = {}

    async def appender(task: int) -> None:
        round_no = 0
        while True:
            batch = [new_event(f"{task}-{round_no}-{i}") for i in range(50)]
            try:
                results = await log.append(batch)
            except LogOverloaded:
                return
            acked.update((e.id, r.position) for e, r in zip(batch, results, strict=True))
            round_no += 1

    tasks = [asyncio.create_task(appender(task)) for task in range(4)]
    deadline = time.monotonic() + RESTART_DEADLINE
    while len(acked) < kill_after:
        assert time.monotonic() < deadline, "the appenders made no progress"
        await asyncio.sleep(0.01)
    server.kill()
    await asyncio.gather(*tasks)
    return acked


async def _until_appends_work(log: JetStreamEventLog) -> list[Any]:
    deadline = time.monotonic() + RESTART_DEADLINE
    while True:
        try:
            return await log.append([new_event("after-restart")])
        except LogOverloaded:
            assert time.monotonic() < deadline, "the log did not come back after the restart"
            await asyncio.sleep(0.05)


async def test_sigkill_of_the_server_loses_no_acknowledged_event(
    nats_server: NatsServer,
) -> None:
    async with JetStreamEventLog(nats_server.url, ack_timeout=2.0) as log:
        acked = await _append_until_killed(log, nats_server, kill_after=2000)
        with pytest.raises(LogOverloaded):
            await log.append([new_event("while-down")])

        await nats_server.start_async()
        (after,) = await _until_appends_work(log)

        found: dict[str, int] = {}
        position = 0
        while page := await log.read(ACME_DEFAULT, after=position, limit=5000):
            found.update((e.id, e.position) for e in page)
            position = page[-1].position
        missing = {i: p for i, p in acked.items() if found.get(i) != p}
        assert not missing, f"{len(missing)} acknowledged events are lost or moved"
        assert after.position > max(acked.values())
        # JetStream rebuilt its duplicate window from the store: a resend is a duplicate.
        some = sorted(acked)[:100]
        again = await log.append([new_event(i) for i in some])
        assert [(r.status, r.position) for r in again] == [
            (AppendStatus.DUPLICATE, acked[i]) for i in some
        ]
    assert len(acked) >= 2000


async def test_three_replicas_in_a_cluster_survive_a_node_killed(
    nats_cluster: NatsCluster,
) -> None:
    async with JetStreamEventLog(nats_cluster.url, replicas=3) as log:
        first = await log.append([new_event(f"e{i}") for i in range(100)])
        nc = await nats.connect(nats_cluster.urls)
        try:
            info = await js_api(nc, f"$JS.API.STREAM.INFO.{log.layout.stream(TenantName('acme'))}")
        finally:
            await nc.close()
        assert info["config"]["num_replicas"] == 3
        leader = info["cluster"]["leader"]
        replicas = [peer["name"] for peer in info["cluster"]["replicas"]]
        assert sorted([leader, *replicas]) == ["n1", "n2", "n3"]

        # Take down a node that leads nothing of ours; the quorum of two goes on.
        follower = next(s for s in nats_cluster.servers if s.name == replicas[0])
        follower.kill()
        later = await _until_appends_work(log)
        stored = await log.read(ACME_DEFAULT)
        assert [e.position for e in stored] == [r.position for r in first + later]

"""`send`: ids given and kept across retries, batches within the server's limits, failover, and
refusals raised with their reasons; each test once with `Client` and once with `AsyncClient`."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from tests.client.conftest import SERVER_MAX_BATCH_EVENTS, Clients, dead_url

from stellwerk.client import Retries, SendError, SendResult, Unreachable


def orders(count: int, **extra: Any) -> list[dict[str, Any]]:
    return [
        {"source": "urn:shop", "type": "order.created", "data": {"n": n}, **extra}
        for n in range(count)
    ]


async def unique_bus(clients: Clients) -> str:
    bus = await clients().put_bus(f"b-{clients.kind}-{uuid.uuid4().hex[:8]}")
    return str(bus.name)


async def test_events_without_an_id_get_one_and_are_stored_once_each(clients: Clients) -> None:
    bus = await unique_bus(clients)
    events = [*orders(2), {"id": "mine", "source": "urn:shop", "type": "order.created"}]
    result = await clients().send(bus, events)
    assert result.accepted == 3
    assert result.duplicates == 0
    assert result.ids[2] == "mine"
    assert all(uuid.UUID(i).version == 4 for i in result.ids[:2])
    assert "id" not in events[0], "the caller's dicts are not changed"
    stored = clients.server.stored(bus)
    assert [e["id"] for e in stored] == result.ids
    assert {e["specversion"] for e in stored} == {"1.0"}
    nothing = await clients().send(bus, [])
    assert (nothing.ids, nothing.batches) == ([], 0)


async def test_a_retry_after_the_server_stored_the_events_keeps_their_ids(
    clients: Clients,
) -> None:
    """The first answer is lost after the events were stored (503 instead of the 202): the
    retry sends the same ids, the server finds them duplicates, and the bus holds one copy."""
    server = clients.server
    bus = await unique_bus(clients)
    server.faults.script.append("store-then-503")
    result = await clients(server.faulty_url).send(bus, orders(5))
    assert len(server.faults.event_requests()) == 2
    assert (result.accepted, result.duplicates) == (5, 5)
    stored = server.stored(bus)
    assert [e["id"] for e in stored] == result.ids


async def test_a_retry_after_a_timeout_keeps_the_ids(clients: Clients) -> None:
    """The events are stored but the answer comes after the client's timeout: the retry
    finds them duplicates."""
    server = clients.server
    bus = await unique_bus(clients)
    server.faults.script.append("store-then-stall")
    result = await clients(server.faulty_url, timeout=0.2).send(bus, orders(4))
    assert len(server.faults.event_requests()) == 2
    assert (result.accepted, result.duplicates) == (4, 4)
    assert [e["id"] for e in server.stored(bus)] == result.ids


async def test_a_dead_endpoint_fails_over_to_a_live_one(clients: Clients) -> None:
    server = clients.server
    bus = await unique_bus(clients)
    client = clients([dead_url(), server.faulty_url])
    first = await client.send(bus, orders(3))
    second = await client.send(bus, orders(2))
    assert [e["id"] for e in server.stored(bus)] == first.ids + second.ids
    # One request each: the dead endpoint is passed over while its cooldown lasts.
    assert len(server.faults.event_requests()) == 2


async def test_an_endpoint_answering_5xx_fails_over_to_the_next(clients: Clients) -> None:
    server = clients.server
    bus = await unique_bus(clients)
    server.faults.broken = True
    result = await clients([server.faulty_url, server.url]).send(bus, orders(3))
    assert len(server.faults.event_requests()) == 1
    assert [e["id"] for e in server.stored(bus)] == result.ids


async def test_an_endpoint_that_hangs_is_failed_over_after_the_timeout(clients: Clients) -> None:
    """The first endpoint stores the events and then hangs (as a stopped process whose kernel
    still accepts connections): after the timeout the next endpoint gets the same ids."""
    server = clients.server
    bus = await unique_bus(clients)
    server.faults.script.append("store-then-stall")
    client = clients([server.faulty_url, server.url], timeout=0.2)
    result = await client.send(bus, orders(3))
    assert len(server.faults.event_requests()) == 1
    assert (result.accepted, result.duplicates) == (3, 3)
    assert [e["id"] for e in server.stored(bus)] == result.ids


async def test_the_preferred_endpoint_is_tried_again_after_its_cooldown(clients: Clients) -> None:
    server = clients.server
    bus = await unique_bus(clients)
    server.faults.broken = True
    client = clients([server.faulty_url, server.url], failover_cooldown=0.0)
    await client.send(bus, orders(1))
    server.faults.broken = False
    await client.send(bus, orders(1))
    assert len(server.faults.event_requests()) == 2  # the failed one, then the one that went
    assert len(server.stored(bus)) == 2


async def test_a_batch_larger_than_the_servers_limit_is_split(clients: Clients) -> None:
    server = clients.server
    bus = await unique_bus(clients)
    client = clients(server.faulty_url)
    result = await client.send(bus, orders(250))
    assert result.accepted == 250
    assert [e["id"] for e in server.stored(bus)] == result.ids
    # 250 -> 413 BatchTooLarge, 125 -> 413, then batches of 62, the limit found.
    statuses = [r.status for r in server.faults.event_requests()]
    assert statuses == [413, 413, 202, 202, 202, 202, 202]
    assert result.batches == statuses.count(202)
    again = await client.send(bus, orders(SERVER_MAX_BATCH_EVENTS))
    assert again.batches == 2, "the lower limit is kept for later sends"


async def test_a_body_limit_lower_than_the_clients_is_found_and_kept(clients: Clients) -> None:
    """A proxy in front refuses bodies above 5,000 bytes: the client halves its batches by
    size until they pass, keeps that size, and sends an event too large for any body alone,
    for the proxy to refuse, without lowering its limit further."""
    server = clients.server
    bus = await unique_bus(clients)
    server.faults.max_body = 5000
    client = clients(server.faulty_url)
    events = orders(12, data={"text": "x" * 1000})
    result = await client.send(bus, events)
    statuses = [r.status for r in server.faults.event_requests()]
    # ~13.5 KB, then ~6.7 KB are refused; batches of half that pass, and so do all after.
    assert statuses[:2] == [413, 413]
    assert set(statuses[2:]) == {202}
    assert all(r.size <= 5000 for r in server.faults.event_requests()[2:])
    assert [e["id"] for e in server.stored(bus)] == result.ids
    server.faults.requests.clear()
    too_large = {"source": "urn:shop", "type": "order.created", "data": "x" * 6000}
    with pytest.raises(SendError) as raised:
        await client.send(bus, [*orders(2), too_large, *orders(2)])
    assert [(f.index, f.error) for f in raised.value.failures] == [(2, "PayloadTooLarge")]
    assert len(raised.value.acknowledged) == 4
    # The two events before it, the large one alone, the two after it: no more halving.
    assert [r.status for r in server.faults.event_requests()] == [202, 413, 202]


async def test_batches_keep_within_the_clients_limits(clients: Clients) -> None:
    server = clients.server
    bus = await unique_bus(clients)
    by_count = await clients(server.faulty_url, max_batch_events=40).send(bus, orders(90))
    assert by_count.batches == 3
    events = orders(10, data={"text": "x" * 1000})
    by_size = await clients(server.faulty_url, max_batch_bytes=3500).send(bus, events)
    assert by_size.batches == 4  # three events of ~1.1 KB to a request
    assert all(r.size <= 3500 for r in server.faults.event_requests()[3:])
    assert len(server.stored(bus)) == 100


async def test_a_refused_event_is_raised_with_its_reason(clients: Clients) -> None:
    bus = await unique_bus(clients)
    events = [*orders(1), {"source": "urn:shop", "data": {}}, *orders(1)]
    with pytest.raises(SendError) as raised:
        await clients().send(bus, events)
    error = raised.value
    assert [(f.index, f.error, f.field) for f in error.failures] == [
        (1, "MissingAttribute", "type")
    ]
    assert error.failures[0].id is not None
    assert (error.error, error.status, error.field) == ("MissingAttribute", 202, "type")
    assert error.unsent == []
    stored = clients.server.stored(bus)
    assert [e["id"] for e in stored] == error.acknowledged
    assert len(error.acknowledged) == 2
    assert "event 1" in str(error)


async def test_a_batch_of_which_no_event_is_valid_is_raised_with_every_reason(
    clients: Clients,
) -> None:
    bus = await unique_bus(clients)
    events = [{"source": "urn:shop"}, {"type": "t", "time": "yesterday"}]
    with pytest.raises(SendError) as raised:
        await clients().send(bus, events)
    failures = raised.value.failures
    assert [f.index for f in failures] == [0, 1]
    assert raised.value.status == 400
    assert {p.field for p in failures[1].errors} == {"source", "time"}
    assert raised.value.acknowledged == []


async def test_a_rate_limited_request_waits_for_retry_after(clients: Clients) -> None:
    server = clients.server
    bus = await unique_bus(clients)
    server.faults.script.append("429")
    began = time.monotonic()
    result = await clients(server.faulty_url).send(bus, orders(2))
    assert time.monotonic() - began >= 0.2  # the injected Retry-After
    assert len(server.faults.event_requests()) == 2
    assert len(server.stored(bus)) == result.accepted == 2


async def test_when_no_endpoint_answers_the_unsent_events_keep_their_ids(
    clients: Clients,
) -> None:
    server = clients.server
    bus = await unique_bus(clients)
    retries = Retries(attempts=3, backoff=0.001, max_backoff=0.002)
    with pytest.raises(SendError) as raised:
        await clients([dead_url(), dead_url()], retries=retries).send(bus, orders(3))
    error = raised.value
    assert isinstance(error.__cause__, Unreachable)
    assert (error.status, error.error) == (None, "Unreachable")
    assert len(error.unsent) == 3
    # Sent again (to a live endpoint), they keep their ids: nothing is stored twice.
    first: SendResult = await clients(server.url).send(bus, error.unsent)
    again: SendResult = await clients(server.url).send(bus, error.unsent)
    assert first.ids == again.ids == [e["id"] for e in error.unsent]
    assert again.duplicates == 3
    assert len(server.stored(bus)) == 3


async def test_an_unknown_bus_is_raised_as_not_found(clients: Clients) -> None:
    with pytest.raises(SendError) as raised:
        await clients().send("no-such-bus", orders(2))
    assert (raised.value.status, raised.value.error) == (404, "NotFound")
    assert len(raised.value.unsent) == 2


async def test_one_client_serves_concurrent_sends(clients: Clients) -> None:
    """Eight sends at once through one client: threads for `Client`, tasks for `AsyncClient`."""
    bus = await unique_bus(clients)
    client = clients()

    async def one(n: int) -> SendResult:
        result: SendResult = await client.send(bus, orders(20, subject=f"t{n}"))
        return result

    results = await asyncio.gather(*(one(n) for n in range(8)))
    ids = [i for r in results for i in r.ids]
    assert sorted(e["id"] for e in clients.server.stored(bus)) == sorted(ids)
    assert len(set(ids)) == 160

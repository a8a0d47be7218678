"""The generator against a tiny real HTTP server that answers badly on purpose: every request is
counted once, by the status the server really sent or as an error when it sent none."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from loadgen import LoadSpec, Mode, Target, generate, render, run_load
from loadgen.requests import BATCH, STRUCTURED

JSON_202 = b'{"accepted":%d,"failed":[],"duplicates":0}'


@dataclass
class Tally:
    """What the server did, to compare with what the generator says it saw."""

    statuses: Counter[int] = field(default_factory=Counter)
    dropped: int = 0
    ids: list[str] = field(default_factory=list)
    content_types: set[str] = field(default_factory=set)
    requests: int = 0


Behaviour = Callable[[int, int], tuple[str, int]]  # (request number, events) -> (how, accepted)


def mixed(number: int, events: int) -> tuple[str, int]:
    return ["202", "503-chunked", "202", "400-close", "drop"][number % 5], events


async def answer(writer: asyncio.StreamWriter, how: str, accepted: int, tally: Tally) -> bool:
    """Send the answer `how`; return False when the connection is to be closed."""
    if how == "202":
        body = JSON_202 % accepted
        writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        tally.statuses[202] += 1
        return True
    if how == "503-chunked":
        writer.write(
            b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n"
            b'b\r\n{"error": "\r\n9\r\nOverload"}\r\n0\r\n\r\n'
        )
        tally.statuses[503] += 1
        return True
    if how == "400-close":
        body = b'{"error":"InvalidRequest"}'
        writer.write(
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (len(body), body)
        )
        tally.statuses[400] += 1
        return False
    if how == "silent":
        return True  # never answer this one; the generator's timeout must end it
    tally.dropped += 1
    return False


@asynccontextmanager
async def tiny_server(behaviour: Behaviour) -> AsyncIterator[tuple[Target, Tally]]:
    tally = Tally()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers = dict(
                    line.split(": ", 1) for line in head.decode().split("\r\n")[1:] if line
                )
                body = await reader.readexactly(int(headers["Content-Length"]))
                tally.content_types.add(headers["Content-Type"])
                decoded = json.loads(body)
                events = decoded if isinstance(decoded, list) else [decoded]
                tally.ids.extend(event["id"] for event in events)
                number = tally.requests
                tally.requests += 1
                how, accepted = behaviour(number, len(events))
                if not await answer(writer, how, accepted, tally):
                    break
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield Target(f"http://127.0.0.1:{port}", "swk_test_key"), tally


async def test_closed_loop_counts_every_answer_and_every_missing_one() -> None:
    async with tiny_server(mixed) as (target, tally):
        spec = LoadSpec(target=target, concurrency=4, requests=200, duration=None, timeout=10)
        result = await generate(spec)
    assert tally.requests == 200
    assert dict(tally.statuses) == result.statuses
    assert sum(result.errors.values()) == tally.dropped > 0
    assert result.answered + sum(result.errors.values()) == 200
    assert result.failed_requests == 200 - tally.statuses[202]
    assert result.events_acknowledged == tally.statuses[202]
    assert result.latency.count == tally.statuses[202]
    assert '"error": "Overload"' in result.samples[503]
    assert "InvalidRequest" in result.samples[400]
    assert len(set(tally.ids)) == len(tally.ids) == 200
    assert tally.content_types == {STRUCTURED}
    report = render("mixed", result)
    assert "answered 503" in report
    assert "answered 400" in report
    assert "without answer" in report


async def test_open_loop_sends_at_the_rate_and_counts_the_same_way() -> None:
    async with tiny_server(mixed) as (target, tally):
        spec = LoadSpec(
            target=target, concurrency=8, requests=150, duration=None, rate=1500, timeout=10
        )
        result = await generate(spec)
    assert tally.requests + result.unsent == 150
    assert dict(tally.statuses) == result.statuses
    assert sum(result.errors.values()) == tally.dropped
    assert result.latency.count == tally.statuses[202]


async def test_batches_count_events_and_events_the_server_did_not_accept() -> None:
    def one_short_every_third(number: int, events: int) -> tuple[str, int]:
        return "202", events - 1 if number % 3 == 0 else events

    async with tiny_server(one_short_every_third) as (target, tally):
        spec = LoadSpec(
            target=target,
            mode=Mode.BATCH,
            batch_size=25,
            concurrency=3,
            requests=30,
            duration=None,
        )
        result = await generate(spec)
    assert result.statuses == {202: 30}
    assert result.events_not_accepted == 10
    assert result.events_acknowledged == 30 * 25 - 10
    assert len(set(tally.ids)) == len(tally.ids) == 750
    assert tally.content_types == {BATCH}


async def test_a_request_without_answer_ends_as_a_timeout() -> None:
    def silent_once(number: int, events: int) -> tuple[str, int]:
        return ("silent" if number == 2 else "202"), events

    async with tiny_server(silent_once) as (target, tally):
        spec = LoadSpec(target=target, concurrency=2, requests=20, duration=None, timeout=0.5)
        result = await generate(spec)
    assert result.errors == {"timeout": 1}
    assert result.statuses == {202: 19}
    assert tally.requests == 20


async def test_duration_ends_the_run_and_warmup_is_counted_apart() -> None:
    async with tiny_server(lambda n, e: ("202", e)) as (target, tally):
        spec = LoadSpec(target=target, concurrency=2, duration=0.4, warmup=0.2)
        result = await generate(spec)
    warm = sum(result.warmup_statuses.values())
    assert warm > 0
    assert result.accepted_requests > 0
    assert warm + result.accepted_requests == tally.requests
    assert result.elapsed > 0
    # The warm-up's events are counted apart too (a server's CPU over the whole run is divided
    # by them all): one event per request here, every one accepted.
    assert result.warmup_events_acknowledged == warm
    assert result.events_acknowledged == result.accepted_requests


async def test_worker_processes_split_the_load_and_their_counts_add_up() -> None:
    async with tiny_server(mixed) as (target, tally):
        spec = LoadSpec(
            target=target, concurrency=4, processes=2, requests=100, duration=None, timeout=10
        )
        result = await asyncio.to_thread(run_load, spec)
    assert tally.requests == 100
    assert dict(tally.statuses) == result.statuses
    assert sum(result.errors.values()) == tally.dropped
    assert len(set(tally.ids)) == 100

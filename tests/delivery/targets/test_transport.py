"""What the delivery transports keep: TLS, timeouts, pooling, no proxies or cookies, the guard.

Each test runs with both transports (libcurl and aiohttp) unless it is about one of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvloop
from aiohttp import web
from standardwebhooks import Webhook
from tests.delivery.targets.authority import Authority
from tests.delivery.targets.support import (
    Receiver,
    Silent,
    StaticResolver,
    make_delivery,
    start_receiver,
)
from yarl import URL

from stellwerk.delivery.model import Delivered, GiveUp, RetryLater
from stellwerk.delivery.targets import (
    AddressPolicy,
    HttpClient,
    HttpTarget,
    SessionPool,
    generate_secret,
)
from stellwerk.delivery.targets.ssrf import UnsafeAddressError
from stellwerk.delivery.targets.transport import TransferError

SECRET = generate_secret()


def target(url: str, pool: SessionPool, **options: object) -> HttpTarget:
    options.setdefault("allow_private", True)
    return HttpTarget(url, session_pool=pool, secret=SECRET, **options)  # type: ignore[arg-type]


# -- TLS -----------------------------------------------------------------------------------------


@pytest.fixture
def authority(tmp_path: Path) -> Authority:
    return Authority.create(tmp_path)


@pytest.fixture
async def tls_receiver(authority: Authority) -> AsyncIterator[Receiver]:
    """A receiver on https://127.0.0.1 whose certificate names only hooks.example.test."""
    context = authority.server_context(names=["hooks.example.test"])
    found, runner = await start_receiver("127.0.0.1", ssl_context=context)
    try:
        yield found
    finally:
        found.closing.set()
        await runner.cleanup()


@pytest.fixture
async def trusting_pool(authority: Authority, client: HttpClient) -> AsyncIterator[SessionPool]:
    """A pool that trusts the test's CA (only) and resolves hooks.example.test to 127.0.0.1."""
    resolver = StaticResolver({"hooks.example.test": ["127.0.0.1"]})
    pool = SessionPool(
        resolver_factory=lambda: resolver, ca_file=str(authority.ca_file), client=client
    )
    try:
        yield pool
    finally:
        await pool.close()


def by_name(receiver: Receiver) -> str:
    return f"https://hooks.example.test:{receiver.port}/hook"


async def test_tls_is_trusted_when_its_ca_is_configured(
    tls_receiver: Receiver, trusting_pool: SessionPool
) -> None:
    outcome = await target(by_name(tls_receiver), trusting_pool).deliver(make_delivery())
    assert outcome == Delivered("HTTP 200", 200, "ok")
    [request] = tls_receiver.seen
    Webhook(SECRET).verify(request.body, request.headers)


async def test_tls_with_an_unknown_ca_is_refused(
    tls_receiver: Receiver, named_pool: tuple[SessionPool, StaticResolver]
) -> None:
    pool, _ = named_pool  # trusts the system's authorities, not the test's own
    outcome = await target(by_name(tls_receiver), pool).deliver(make_delivery())
    assert isinstance(outcome, RetryLater)
    assert "certificate" in outcome.reason.lower()
    assert tls_receiver.seen == []


async def test_tls_checks_the_name_not_the_address_connected_to(
    tls_receiver: Receiver, trusting_pool: SessionPool
) -> None:
    by_address = await target(tls_receiver.url(), trusting_pool).deliver(make_delivery())
    named = await target(by_name(tls_receiver), trusting_pool).deliver(make_delivery())
    # The certificate names hooks.example.test only: the same server by its address is refused.
    assert isinstance(by_address, RetryLater)
    assert "127.0.0.1" in by_address.reason
    assert named == Delivered("HTTP 200", 200, "ok")
    assert len(tls_receiver.seen) == 1


async def test_curl_trusts_ssl_cert_file_from_the_environment(
    tls_receiver: Receiver, authority: Authority, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(authority.ca_file))
    resolver = StaticResolver({"hooks.example.test": ["127.0.0.1"]})
    pool = SessionPool(resolver_factory=lambda: resolver, client="curl")
    try:
        outcome = await target(by_name(tls_receiver), pool).deliver(make_delivery())
    finally:
        await pool.close()
    assert outcome == Delivered("HTTP 200", 200, "ok")


# -- timeouts ------------------------------------------------------------------------------------


async def test_a_hanging_receiver_times_out_and_its_connection_is_closed(
    silent: Silent, receiver: Receiver, pool: SessionPool
) -> None:
    outcome = await target(silent.url, pool, timeout=0.3).deliver(make_delivery())
    assert outcome == RetryLater("timed out after 0.3 s")
    assert silent.arrived.is_set()
    # The abandoned request does not keep its connection open (nor its slot in the pool).
    await asyncio.wait_for(silent.hung_up.wait(), 10)
    assert await target(receiver.url(), pool).deliver(make_delivery()) == Delivered(
        "HTTP 200", 200, "ok"
    )


async def test_a_kept_connection_that_dies_unanswered_is_sent_again_only_by_curl(
    pool: SessionPool, client: HttpClient
) -> None:
    """The documented difference: libcurl sends a request again, at once, on a fresh connection
    when a reused one closes before any byte of an answer; aiohttp reports the failure."""
    requests = 0

    async def answer_then_drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                requests += 1
                if requests == 2:  # the second request, on the kept connection: hang up
                    break
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        except asyncio.IncompleteReadError:
            pass  # the client closed a kept connection
        writer.close()

    server = await asyncio.start_server(answer_then_drop, "127.0.0.1", 0)
    try:
        http = target(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook", pool)
        assert await http.deliver(make_delivery()) == Delivered("HTTP 200", 200)
        second = await http.deliver(make_delivery())
    finally:
        server.close()
        await server.wait_closed()
    if client == "curl":
        assert second == Delivered("HTTP 200", 200)
        assert requests == 3
    else:
        assert isinstance(second, RetryLater)
        assert "disconnected" in second.reason
        assert requests == 2


async def test_an_answer_that_is_not_http_is_retried(pool: SessionPool) -> None:
    async def babble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(babble, "127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"
        outcome = await target(url, pool).deliver(make_delivery())
    finally:
        server.close()
        await server.wait_closed()
    assert isinstance(outcome, RetryLater)


async def test_closing_the_pool_ends_a_request_under_way_as_a_retry(
    silent: Silent, client: HttpClient
) -> None:
    pool = SessionPool(client=client)
    delivering = asyncio.create_task(target(silent.url, pool, timeout=60).deliver(make_delivery()))
    await silent.arrived.wait()
    await pool.close()
    outcome = await asyncio.wait_for(delivering, 10)
    assert isinstance(outcome, RetryLater)


# -- the pool ------------------------------------------------------------------------------------


async def test_targets_share_keep_alive_connections(receiver: Receiver, pool: SessionPool) -> None:
    first = target(receiver.url("/a"), pool)
    second = target(receiver.url("/b"), pool)
    for _ in range(3):
        assert isinstance(await first.deliver(make_delivery()), Delivered)
        assert isinstance(await second.deliver(make_delivery()), Delivered)
    assert len(receiver.seen) == 6
    assert len({seen.peer for seen in receiver.seen}) == 1


async def test_the_pool_puts_no_cap_on_connections_in_use(
    receiver: Receiver, pool: SessionPool
) -> None:
    # More at once than aiohttp's default connector allows (100): only the target's budget counts.
    wanted = 120
    arrived = 0
    all_in = asyncio.Event()

    async def gate(request: web.Request) -> web.StreamResponse:
        nonlocal arrived
        arrived += 1
        if arrived == wanted:
            all_in.set()
        await all_in.wait()
        return web.Response()

    receiver.on("/hook", gate)
    http = target(receiver.url(), pool, concurrency=wanted)
    outcomes = await asyncio.wait_for(
        asyncio.gather(*(http.deliver(make_delivery()) for _ in range(wanted))), 60
    )
    assert outcomes == [Delivered("HTTP 200", 200)] * wanted
    assert len({seen.peer for seen in receiver.seen}) == wanted


async def test_a_named_host_is_resolved_once_and_its_connection_kept(
    receiver: Receiver, named_pool: tuple[SessionPool, StaticResolver]
) -> None:
    pool, resolver = named_pool
    http = target(f"http://hooks.example.test:{receiver.port}/hook", pool)
    for _ in range(3):
        assert await http.deliver(make_delivery()) == Delivered("HTTP 200", 200, "ok")
    assert resolver.asked == ["hooks.example.test"]
    assert len({seen.peer for seen in receiver.seen}) == 1
    assert {seen.headers["Host"] for seen in receiver.seen} == {
        f"hooks.example.test:{receiver.port}"
    }


async def test_the_next_address_of_a_name_is_tried_when_one_refuses(
    receiver: Receiver, client: HttpClient
) -> None:
    # Nothing listens on 127.0.0.3 at the receiver's port: the kernel refuses that connection.
    resolver = StaticResolver({"hooks.example.test": ["127.0.0.3", "127.0.0.1"]})
    pool = SessionPool(resolver_factory=lambda: resolver, client=client)
    try:
        http = target(f"http://hooks.example.test:{receiver.port}/hook", pool)
        assert await http.deliver(make_delivery()) == Delivered("HTTP 200", 200, "ok")
    finally:
        await pool.close()
    assert len(receiver.seen) == 1


async def test_a_long_answer_is_read_in_part_and_the_next_request_goes_through(
    receiver: Receiver, pool: SessionPool
) -> None:
    receiver.answer("/big", 200, "x" * 300_000)
    receiver.answer("/bad", 400, "y" * 300_000)
    # The history keeps the first KB of the answer, no more.
    assert await target(receiver.url("/big"), pool).deliver(make_delivery()) == Delivered(
        "HTTP 200", 200, "x" * 1024
    )
    refused = await target(receiver.url("/bad"), pool).deliver(make_delivery())
    assert isinstance(refused, GiveUp)
    assert refused.reason.startswith("HTTP 400 Bad Request: yyy")
    assert await target(receiver.url(), pool).deliver(make_delivery()) == Delivered(
        "HTTP 200", 200, "ok"
    )


async def test_binary_payloads_arrive_byte_for_byte(receiver: Receiver, pool: SessionPool) -> None:
    payload = bytes(range(256)) * 8
    delivery = make_delivery(payload, content_type="application/octet-stream")
    assert await target(receiver.url(), pool).deliver(delivery) == Delivered("HTTP 200", 200, "ok")
    [request] = receiver.seen
    assert request.body == payload
    assert request.headers["Content-Type"] == "application/octet-stream"


async def test_cookies_are_never_sent_back(receiver: Receiver, pool: SessionPool) -> None:
    async def set_cookie(request: web.Request) -> web.StreamResponse:
        response = web.Response(text="ok")
        response.set_cookie("session", "tenant-a", path="/")
        return response

    receiver.on("/hook", set_cookie)
    http = target(receiver.url(), pool)
    assert isinstance(await http.deliver(make_delivery()), Delivered)
    assert isinstance(await http.deliver(make_delivery()), Delivered)
    assert [seen.headers.get("Cookie") for seen in receiver.seen] == [None, None]


async def test_proxies_from_the_environment_are_not_used(
    receiver: Receiver, client: HttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy, runner = await start_receiver("127.0.0.1")
    try:
        for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "all_proxy", "ALL_PROXY"):
            monkeypatch.setenv(name, proxy.url("/"))
        pool = SessionPool(client=client)
        try:
            outcome = await target(receiver.url(), pool).deliver(make_delivery())
        finally:
            await pool.close()
    finally:
        await runner.cleanup()
    assert isinstance(outcome, Delivered)
    assert len(receiver.seen) == 1
    assert proxy.seen == []


async def test_a_header_value_with_a_line_break_is_never_sent(receiver: Receiver) -> None:
    pool = SessionPool(client="curl")
    try:
        transport = pool.transport(AddressPolicy(allow_private=True))
        with pytest.raises(TransferError, match="line break") as caught:
            await transport.post(URL(receiver.url()), b"{}", {"X-Key": "a\r\nX-Injected: yes"}, 5.0)
    finally:
        await pool.close()
    assert not caught.value.retryable
    assert receiver.seen == []


# -- the guard at the socket (libcurl) -----------------------------------------------------------


async def test_curl_opens_no_socket_to_an_address_the_policy_refuses(receiver: Receiver) -> None:
    pool = SessionPool(client="curl")
    try:
        transport = pool.transport(AddressPolicy())
        # HttpTarget refuses such a URL before it gets here; the socket check is the last line.
        with pytest.raises(UnsafeAddressError, match=r"address 127\.0\.0\.1 is loopback"):
            await transport.post(
                URL(receiver.url()), b"{}", {"Content-Type": "application/json"}, 5.0
            )
        allowed = pool.transport(AddressPolicy.build(allowed_networks=["127.0.0.1/32"]))
        answer = await allowed.post(URL(receiver.url()), b"{}", {}, 5.0)
    finally:
        await pool.close()
    assert answer.status == 200
    assert len(receiver.seen) == 1


async def test_a_closed_pool_hands_out_no_transport() -> None:
    pool = SessionPool()
    await pool.close()
    with pytest.raises(RuntimeError, match="closed"):
        pool.transport(AddressPolicy())


# -- the event loop the server runs on -----------------------------------------------------------


def test_deliveries_run_on_uvloop(client: HttpClient) -> None:
    """`stellwerk serve` runs on uvloop: the transports' socket and timer callbacks must too."""

    async def deliver() -> tuple[list[object], object, int]:
        found, runner = await start_receiver("127.0.0.1")
        silent = await Silent().start()
        pool = SessionPool(client=client)
        try:
            http = target(found.url(), pool, concurrency=8)
            outcomes: list[object] = list(
                await asyncio.gather(
                    *(http.deliver(make_delivery(event_id=f"e{n}")) for n in range(40))
                )
            )
            hung = await target(silent.url, pool, timeout=0.2).deliver(make_delivery())
            await asyncio.wait_for(silent.hung_up.wait(), 10)
        finally:
            await pool.close()
            await silent.stop()
            found.closing.set()
            await runner.cleanup()
        return outcomes, hung, len({seen.headers["webhook-id"] for seen in found.seen})

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        outcomes, hung, distinct = runner.run(deliver())
    assert outcomes == [Delivered("HTTP 200", 200, "ok")] * 40
    assert distinct == 40
    assert hung == RetryLater("timed out after 0.2 s")

"""The http target against real receivers on loopback: answers, signatures, budgets, the guard."""

from __future__ import annotations

import asyncio
import email.utils
import json
import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.abc import ResolveResult
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from tests.delivery.targets.support import (
    Clock,
    Receiver,
    StaticResolver,
    make_delivery,
    start_receiver,
)

from stellwerk.delivery.model import Delivered, GiveUp, RetryLater
from stellwerk.delivery.targets import HttpClient, HttpTarget, SessionPool, generate_secret
from stellwerk.rules import HttpParameters, InvalidTargetError, UnsafeTargetError

SECRET = generate_secret()


def target(
    receiver: Receiver, pool: SessionPool, path: str = "/hook", **options: object
) -> HttpTarget:
    options.setdefault("allow_private", True)
    return HttpTarget(receiver.url(path), session_pool=pool, secret=SECRET, **options)  # type: ignore[arg-type]


async def test_delivers_the_payload_signed_as_standard_webhooks(
    receiver: Receiver, pool: SessionPool
) -> None:
    delivery = make_delivery(event_id="order-42")
    outcome = await target(receiver, pool).deliver(delivery)

    assert outcome == Delivered("HTTP 200", 200, "ok")
    [request] = receiver.seen
    assert request.method == "POST"
    assert request.body == delivery.payload
    assert request.headers["Content-Type"] == "application/cloudevents+json"
    assert request.headers["webhook-id"] == "order-42"
    verified = Webhook(SECRET).verify(request.body, request.headers)
    assert verified == json.loads(delivery.payload)


async def test_a_target_s_own_headers_go_along_and_its_signature_stays_its_own(
    receiver: Receiver, pool: SessionPool
) -> None:
    # `http_parameters.headers`: the save-time checks refuse the target's own names; should one
    # slip through, the signature still wins.
    own = {"X-Shop": "north", "Webhook-Id": "forged"}
    await target(receiver, pool, headers=own).deliver(make_delivery(event_id="order-7"))
    [request] = receiver.seen
    assert request.headers["X-Shop"] == "north"
    assert [v for k, v in request.headers.items() if k.lower() == "webhook-id"] == ["order-7"]
    Webhook(SECRET).verify(request.body, request.headers)


async def test_json_path_parameters_are_looked_up_in_each_delivery_s_event(
    receiver: Receiver, pool: SessionPool
) -> None:
    parameters = HttpParameters(
        path_values=["$.detail.shop"],
        headers={"X-Order": "$.detail.order", "X-Gone": "$.detail.gone", "X-Fixed": "f"},
        query={"n": "$.detail.lines[1]", "v": "2"},
    )
    hook = target(receiver, pool, "/shops/*/hook", parameters=parameters)
    for shop, order in (("north", 7), ("süd 2", 8)):
        event = {"detail": {"shop": shop, "order": order, "lines": [1, {"sku": "a"}]}}
        outcome = await hook.deliver(make_delivery(json.dumps(event).encode()))
        assert isinstance(outcome, Delivered)
    first, second = receiver.seen
    assert (first.path, first.query) == ("/shops/north/hook", 'n={"sku":"a"}&v=2')
    assert second.path == "/shops/süd 2/hook"
    assert (first.headers["X-Order"], second.headers["X-Order"]) == ("7", "8")
    assert first.headers["X-Fixed"] == "f"
    assert "X-Gone" not in first.headers
    Webhook(SECRET).verify(second.body, second.headers)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"detail": {}}', "path value $.detail.shop: the event has no value there"),
        (b'{"detail": {"shop": null}}', "path value $.detail.shop: the event has no value there"),
        (
            b'{"detail": {"shop": "n", "order": "7\\r\\nX-Evil: 1"}}',
            "header X-Order ($.detail.order): the event's value holds a line break",
        ),
        (b"not json", "the payload is not JSON"),
    ],
)
async def test_an_event_that_cannot_fill_its_parameters_is_given_up_unsent(
    receiver: Receiver, pool: SessionPool, payload: bytes, reason: str
) -> None:
    parameters = HttpParameters(
        path_values=["$.detail.shop"], headers={"X-Order": "$.detail.order"}
    )
    hook = target(receiver, pool, "/shops/*/hook", parameters=parameters)
    outcome = await hook.deliver(make_delivery(payload))
    assert isinstance(outcome, GiveUp)
    assert reason in outcome.reason
    assert receiver.seen == []


async def test_signature_does_not_verify_with_another_secret_or_body(
    receiver: Receiver, pool: SessionPool
) -> None:
    await target(receiver, pool).deliver(make_delivery())
    [request] = receiver.seen
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(request.body, request.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(request.body.replace(b"order", b"refund"), request.headers)


async def test_transformed_text_payload_keeps_its_content_type(
    receiver: Receiver, pool: SessionPool
) -> None:
    delivery = make_delivery(b"Order 42 shipped", content_type="text/plain")
    assert isinstance(await target(receiver, pool).deliver(delivery), Delivered)
    [request] = receiver.seen
    assert request.headers["Content-Type"] == "text/plain"
    Webhook(SECRET).verify(request.body, request.headers, json_parse=False)


@pytest.mark.parametrize("status", [200, 201, 202, 204])
async def test_any_2xx_is_delivered(receiver: Receiver, pool: SessionPool, status: int) -> None:
    receiver.answer("/hook", status)
    assert await target(receiver, pool).deliver(make_delivery()) == Delivered(
        f"HTTP {status}", status
    )


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_5xx_is_retried_with_the_body_as_reason(
    receiver: Receiver, pool: SessionPool, status: int
) -> None:
    receiver.answer("/hook", status, "database is down")
    outcome = await target(receiver, pool).deliver(make_delivery())
    assert isinstance(outcome, RetryLater)
    assert outcome.reason.startswith(f"HTTP {status}")
    assert "database is down" in outcome.reason
    assert outcome.retry_after is None
    assert not outcome.throttled


async def test_503_with_retry_after_passes_it_on(receiver: Receiver, pool: SessionPool) -> None:
    receiver.answer("/hook", 503, **{"Retry-After": "7"})
    outcome = await target(receiver, pool).deliver(make_delivery())
    assert outcome == RetryLater(outcome.reason, retry_after=7.0, status=503)  # type: ignore[union-attr]


async def test_429_with_retry_after_seconds_is_throttled(
    receiver: Receiver, pool: SessionPool
) -> None:
    receiver.answer("/hook", 429, "slow down", **{"Retry-After": "30"})
    outcome = await target(receiver, pool).deliver(make_delivery())
    assert isinstance(outcome, RetryLater)
    assert outcome.throttled
    assert outcome.retry_after == 30.0
    assert "429" in outcome.reason


async def test_429_with_retry_after_http_date(receiver: Receiver, pool: SessionPool) -> None:
    now = 1_700_000_000.0
    later = email.utils.formatdate(now + 120, usegmt=True)
    receiver.answer("/hook", 429, **{"Retry-After": later})
    outcome = await target(receiver, pool, wall_clock=lambda: now).deliver(make_delivery())
    assert isinstance(outcome, RetryLater)
    assert outcome.retry_after == 120.0
    assert outcome.throttled


async def test_429_with_a_date_in_the_past_means_now(receiver: Receiver, pool: SessionPool) -> None:
    now = 1_700_000_000.0
    receiver.answer("/hook", 429, **{"Retry-After": email.utils.formatdate(now - 60, usegmt=True)})
    outcome = await target(receiver, pool, wall_clock=lambda: now).deliver(make_delivery())
    assert isinstance(outcome, RetryLater)
    assert outcome.retry_after == 0.0


@pytest.mark.parametrize("status", [400, 403, 404, 410, 413, 422])
async def test_other_4xx_give_up(receiver: Receiver, pool: SessionPool, status: int) -> None:
    receiver.answer("/hook", status, '{"error": "gone for good"}')
    outcome = await target(receiver, pool).deliver(make_delivery())
    assert isinstance(outcome, GiveUp)
    assert outcome.reason.startswith(f"HTTP {status}")
    assert "gone for good" in outcome.reason


async def test_long_error_bodies_are_cut_short(receiver: Receiver, pool: SessionPool) -> None:
    receiver.answer("/hook", 400, "x" * 100_000)
    outcome = await target(receiver, pool).deliver(make_delivery())
    assert isinstance(outcome, GiveUp)
    assert len(outcome.reason) < 1_000
    assert outcome.reason.endswith("...")


async def test_a_receiver_slower_than_the_timeout_is_retried(
    receiver: Receiver, pool: SessionPool
) -> None:
    entered = asyncio.Event()

    async def hang(request: web.Request) -> web.StreamResponse:
        entered.set()
        await receiver.closing.wait()
        return web.Response()

    receiver.on("/hook", hang)
    outcome = await target(receiver, pool, timeout=0.2).deliver(make_delivery())
    assert entered.is_set()
    assert outcome == RetryLater("timed out after 0.2 s")


async def test_connection_refused_is_retried(pool: SessionPool) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nobody listens on the port now: the kernel answers the connect with a reset.
    http = HttpTarget(
        f"http://127.0.0.1:{port}/hook", session_pool=pool, secret=SECRET, allow_private=True
    )
    outcome = await http.deliver(make_delivery())
    assert isinstance(outcome, RetryLater)
    assert "Cannot connect" in outcome.reason


async def test_dns_failure_is_retried(client: HttpClient) -> None:
    pool = SessionPool(resolver_factory=lambda: StaticResolver({}), client=client)
    try:
        http = HttpTarget("http://nowhere.example.test/", session_pool=pool, secret=SECRET)
        outcome = await http.deliver(make_delivery())
    finally:
        await pool.close()
    assert isinstance(outcome, RetryLater)
    assert "nowhere.example.test" in outcome.reason


class HangingResolver(StaticResolver):
    """A DNS server that never answers."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_name_lookup_that_hangs_counts_against_the_timeout(client: HttpClient) -> None:
    resolver = HangingResolver({})
    pool = SessionPool(resolver_factory=lambda: resolver, client=client)
    try:
        http = HttpTarget(
            "http://slow-dns.example.test/", session_pool=pool, secret=SECRET, timeout=0.2
        )
        outcome = await asyncio.wait_for(http.deliver(make_delivery()), 30)
    finally:
        await pool.close()
    assert outcome == RetryLater("timed out after 0.2 s")
    assert resolver.asked == ["slow-dns.example.test"]


async def test_loopback_is_refused_without_allow_private(
    receiver: Receiver, pool: SessionPool
) -> None:
    with pytest.raises(UnsafeTargetError, match=r"127\.0\.0\.1 is loopback"):
        target(receiver, pool, allow_private=False)
    assert isinstance(await target(receiver, pool).deliver(make_delivery()), Delivered)


async def test_a_name_resolving_to_loopback_is_refused_at_delivery(
    receiver: Receiver, named_pool: tuple[SessionPool, StaticResolver]
) -> None:
    pool, resolver = named_pool  # the attacker's DNS answers with 127.0.0.1
    url = f"http://hooks.example.test:{receiver.port}/hook"
    http = HttpTarget(url, session_pool=pool, secret=SECRET)  # a name passes the save-time check
    outcome = await http.deliver(make_delivery())
    assert isinstance(outcome, GiveUp)
    assert "127.0.0.1 (loopback)" in outcome.reason
    assert "hooks.example.test" in outcome.reason
    assert resolver.asked == ["hooks.example.test"]
    assert receiver.seen == []

    allowed = HttpTarget(url, session_pool=pool, secret=SECRET, allow_private=True)
    assert isinstance(await allowed.deliver(make_delivery()), Delivered)
    assert len(receiver.seen) == 1


@pytest.fixture
async def public_receiver() -> AsyncIterator[Receiver]:
    """A receiver on 127.0.0.2, which the tests allow as if it were a public address."""
    found, runner = await start_receiver("127.0.0.2")
    try:
        yield found
    finally:
        found.closing.set()
        await runner.cleanup()


def redirecting(to: str, status: int = 307) -> web.Response:
    return web.Response(status=status, headers={"Location": to})


async def test_redirect_to_a_private_address_is_refused(
    public_receiver: Receiver, receiver: Receiver, pool: SessionPool
) -> None:
    async def to_loopback(request: web.Request) -> web.StreamResponse:
        return redirecting(receiver.url("/internal"))

    public_receiver.on("/hook", to_loopback)
    http = HttpTarget(
        public_receiver.url("/hook"),
        session_pool=pool,
        secret=SECRET,
        allowed_networks=["127.0.0.2/32"],
    )
    outcome = await http.deliver(make_delivery())
    assert isinstance(outcome, GiveUp)
    assert f"refused {receiver.url('/internal')}" in outcome.reason
    assert "127.0.0.1 is loopback" in outcome.reason
    assert receiver.seen == []


async def test_307_and_308_are_followed_with_the_same_signed_body(
    public_receiver: Receiver, pool: SessionPool
) -> None:
    async def first(request: web.Request) -> web.StreamResponse:
        return redirecting("/second", 308)

    async def second(request: web.Request) -> web.StreamResponse:
        return redirecting(public_receiver.url("/final"), 307)

    public_receiver.on("/hook", first)
    public_receiver.on("/second", second)
    http = HttpTarget(
        public_receiver.url("/hook"),
        session_pool=pool,
        secret=SECRET,
        allowed_networks=["127.0.0.2/32"],
    )
    assert await http.deliver(make_delivery()) == Delivered("HTTP 200", 200, "ok")
    assert [seen.path for seen in public_receiver.seen] == ["/hook", "/second", "/final"]
    final = public_receiver.seen[-1]
    assert final.method == "POST"
    Webhook(SECRET).verify(final.body, final.headers)


async def test_redirect_loops_stop_after_three_hops(receiver: Receiver, pool: SessionPool) -> None:
    async def loop(request: web.Request) -> web.StreamResponse:
        return redirecting("/hook")

    receiver.on("/hook", loop)
    outcome = await target(receiver, pool).deliver(make_delivery())
    assert isinstance(outcome, GiveUp)
    assert "more than 3 redirects" in outcome.reason
    assert len(receiver.seen) == 4


@pytest.mark.parametrize("status", [301, 302, 303])
async def test_redirects_that_would_drop_the_body_give_up(
    receiver: Receiver, pool: SessionPool, status: int
) -> None:
    async def moved(request: web.Request) -> web.StreamResponse:
        return redirecting("/elsewhere", status)

    receiver.on("/hook", moved)
    outcome = await target(receiver, pool).deliver(make_delivery())
    assert isinstance(outcome, GiveUp)
    assert f"HTTP {status}" in outcome.reason
    assert "point the target at the final URL" in outcome.reason
    assert [seen.path for seen in receiver.seen] == ["/hook"]


async def test_rate_limit_throttles_instead_of_waiting(
    receiver: Receiver, pool: SessionPool
) -> None:
    clock = Clock()
    http = target(receiver, pool, rate_limit=2.0, clock=clock)
    assert isinstance(await http.deliver(make_delivery()), Delivered)
    assert isinstance(await http.deliver(make_delivery()), Delivered)
    throttled = await http.deliver(make_delivery())
    assert throttled == RetryLater(
        "rate limit of the target reached", retry_after=0.5, throttled=True
    )
    assert len(receiver.seen) == 2
    clock.advance(0.5)
    assert isinstance(await http.deliver(make_delivery()), Delivered)
    assert len(receiver.seen) == 3


async def test_concurrency_is_bounded_per_target(receiver: Receiver, pool: SessionPool) -> None:
    in_flight = 0
    most = 0
    two_in = asyncio.Event()

    async def gate(request: web.Request) -> web.StreamResponse:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        if in_flight == 2:
            two_in.set()
        await two_in.wait()
        in_flight -= 1
        return web.Response()

    receiver.on("/hook", gate)
    http = target(receiver, pool, concurrency=2)
    outcomes = await asyncio.gather(*(http.deliver(make_delivery()) for _ in range(8)))
    assert all(isinstance(outcome, Delivered) for outcome in outcomes)
    assert most == 2
    assert len(receiver.seen) == 8


async def test_a_hanging_target_does_not_hold_up_another(
    receiver: Receiver, pool: SessionPool
) -> None:
    hung = 0
    both_hung = asyncio.Event()

    async def hang(request: web.Request) -> web.StreamResponse:
        nonlocal hung
        hung += 1
        if hung == 2:
            both_hung.set()
        await receiver.closing.wait()
        return web.Response()

    receiver.on("/slow", hang)
    slow = target(receiver, pool, "/slow", concurrency=2, timeout=60)
    fast = target(receiver, pool, "/fast")
    stuck = [asyncio.create_task(slow.deliver(make_delivery())) for _ in range(4)]
    await both_hung.wait()
    # Every slot of the slow target is taken and two more deliveries wait for one.
    outcomes = [await fast.deliver(make_delivery(event_id=f"f{i}")) for i in range(5)]
    assert all(isinstance(outcome, Delivered) for outcome in outcomes)
    assert not any(task.done() for task in stuck)
    receiver.closing.set()
    assert all(isinstance(outcome, Delivered) for outcome in await asyncio.gather(*stuck))


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"timeout": 0}, "timeout"),
        ({"timeout": 301}, "timeout"),
        ({"concurrency": 0}, "concurrency"),
        ({"rate_limit": 0}, "rate_limit"),
        ({"secret": "not-whsec"}, "secret"),
        ({"secret": "whsec_c2hvcnQ="}, "secret"),
        ({"secret": "whsec_%%%"}, "secret"),
    ],
)
async def test_bad_settings_name_their_field(
    pool: SessionPool, options: dict[str, object], field: str
) -> None:
    arguments: dict[str, object] = {"session_pool": pool, "secret": SECRET, **options}
    with pytest.raises(InvalidTargetError) as caught:
        HttpTarget("https://example.com/", **arguments)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_generated_secrets_are_fresh_and_accepted_by_standardwebhooks() -> None:
    first, second = generate_secret(), generate_secret()
    assert first != second
    assert first.startswith("whsec_")
    Webhook(first)

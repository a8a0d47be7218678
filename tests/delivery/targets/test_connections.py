"""Connections: specs checked at save time, sealed at rest, and auth on real requests."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import pytest
from aiohttp import web
from tests.conftest import free_port
from tests.delivery.targets.support import (
    Clock,
    Receiver,
    StaticResolver,
    make_delivery,
    start_receiver,
)

from stellwerk.delivery.model import Delivered, GiveUp, RetryLater
from stellwerk.delivery.targets import (
    AddressPolicy,
    ConnectionAuth,
    HttpClient,
    HttpTarget,
    SessionPool,
    build_auth,
    generate_secret,
    parse_connection,
)
from stellwerk.rules import (
    ApiKeyQuerySpec,
    ApiKeySpec,
    BasicAuthSpec,
    ConnectionSpec,
    InvalidConnectionError,
    OAuthClientCredentialsSpec,
    open_connection,
    public_view,
    seal_connection,
)
from stellwerk.secrets import DecryptionError, SecretBox

LOOPBACK = AddressPolicy(allow_private=True)


def http_target(receiver: Receiver, pool: SessionPool, auth: ConnectionAuth) -> HttpTarget:
    return HttpTarget(
        receiver.url(), session_pool=pool, secret=generate_secret(), auth=auth, allow_private=True
    )


async def test_basic_auth_reaches_the_receiver(receiver: Receiver, pool: SessionPool) -> None:
    spec = parse_connection({"type": "basic", "username": "stellwerk", "password": "pä:ss"})
    auth = build_auth(spec, session_pool=pool, policy=LOOPBACK)
    assert isinstance(await http_target(receiver, pool, auth).deliver(make_delivery()), Delivered)
    scheme, _, encoded = receiver.seen[0].headers["Authorization"].partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(encoded).decode() == "stellwerk:pä:ss"


async def test_api_key_header_reaches_the_receiver(receiver: Receiver, pool: SessionPool) -> None:
    spec = parse_connection({"type": "api_key", "header": "X-Api-Key", "value": "k-123"})
    auth = build_auth(spec, session_pool=pool, policy=LOOPBACK)
    assert isinstance(await http_target(receiver, pool, auth).deliver(make_delivery()), Delivered)
    assert receiver.seen[0].headers["X-Api-Key"] == "k-123"


async def test_an_api_key_that_is_not_ascii_arrives_as_utf_8(
    receiver: Receiver, pool: SessionPool
) -> None:
    spec = parse_connection({"type": "api_key", "header": "X-Api-Key", "value": "schlüssel-ä"})
    auth = build_auth(spec, session_pool=pool, policy=LOOPBACK)
    assert isinstance(await http_target(receiver, pool, auth).deliver(make_delivery()), Delivered)
    assert receiver.seen[0].headers["X-Api-Key"] == "schlüssel-ä"


async def test_a_query_key_reaches_the_receiver_and_stays_out_of_the_url_and_reasons(
    receiver: Receiver, pool: SessionPool
) -> None:
    spec = parse_connection({"type": "api_key_query", "parameter": "api_secret", "value": "s&=ö"})
    auth = build_auth(spec, session_pool=pool, policy=LOOPBACK)
    target = HttpTarget(
        receiver.url("/mp/collect?measurement_id=G-1"),
        session_pool=pool,
        secret=generate_secret(),
        auth=auth,
        allow_private=True,
    )
    assert isinstance(await target.deliver(make_delivery()), Delivered)
    assert parse_qs(receiver.seen[0].query) == {"measurement_id": ["G-1"], "api_secret": ["s&=ö"]}
    assert "api_secret" not in str(target.url)
    assert "api_secret" not in repr(target)


async def test_a_query_key_the_receiver_echoes_is_cut_out_of_the_kept_answer(
    receiver: Receiver, pool: SessionPool
) -> None:
    spec = parse_connection({"type": "api_key_query", "parameter": "key", "value": "hunter2"})
    auth = build_auth(spec, session_pool=pool, policy=LOOPBACK)
    target = HttpTarget(
        receiver.url("/echo"), session_pool=pool, secret=generate_secret(), auth=auth,
        allow_private=True,
    )  # fmt: skip
    receiver.answer("/echo", 200, "got key=hunter2")
    delivered = await target.deliver(make_delivery())
    assert delivered == Delivered("HTTP 200", 200, "got key=REDACTED")
    receiver.answer("/echo", 503, "bad key hunter2")
    failed = await target.deliver(make_delivery())
    assert isinstance(failed, RetryLater)
    assert (failed.status, failed.answer) == (503, "bad key REDACTED")
    assert "hunter2" not in failed.reason


async def test_a_query_key_follows_a_redirect_to_its_own_origin_only(
    receiver: Receiver, pool: SessionPool
) -> None:
    elsewhere, runner = await start_receiver("127.0.0.1")
    try:

        async def away(request: web.Request) -> web.StreamResponse:
            return web.Response(status=307, headers={"Location": elsewhere.url("/in")})

        async def same_origin(request: web.Request) -> web.StreamResponse:
            return web.Response(status=308, headers={"Location": "/away"})

        receiver.on("/hook", same_origin)
        receiver.on("/away", away)
        spec = parse_connection({"type": "api_key_query", "parameter": "key", "value": "k-123"})
        auth = build_auth(spec, session_pool=pool, policy=LOOPBACK)
        outcome = await http_target(receiver, pool, auth).deliver(make_delivery())
    finally:
        await runner.cleanup()
    assert isinstance(outcome, Delivered)
    assert [seen.query for seen in receiver.seen] == ["key=k-123", "key=k-123"]
    assert elsewhere.seen[0].query == ""


async def test_a_query_key_is_cut_out_of_a_transfer_error(pool: SessionPool) -> None:
    spec = parse_connection({"type": "api_key_query", "parameter": "key", "value": "hunter2"})
    auth = build_auth(spec, session_pool=pool, policy=LOOPBACK)
    # A port nobody listens on: the transport's reason is about the connection, and whatever
    # it says of the URL must not carry the key.
    target = HttpTarget(
        f"http://127.0.0.1:{free_port()}/hook",
        session_pool=pool,
        secret=generate_secret(),
        auth=auth,
        allow_private=True,
    )
    outcome = await target.deliver(make_delivery())
    assert isinstance(outcome, RetryLater)
    assert "hunter2" not in outcome.reason


async def test_a_401_with_fixed_credentials_gives_up(receiver: Receiver, pool: SessionPool) -> None:
    receiver.answer("/hook", 401, "bad key")
    spec = parse_connection({"type": "api_key", "header": "X-Api-Key", "value": "wrong"})
    auth = build_auth(spec, session_pool=pool, policy=LOOPBACK)
    outcome = await http_target(receiver, pool, auth).deliver(make_delivery())
    assert isinstance(outcome, GiveUp)
    assert "HTTP 401" in outcome.reason
    assert len(receiver.seen) == 1


@dataclass
class TokenEndpoint:
    """A real OAuth token endpoint on loopback that counts grants and numbers its tokens."""

    receiver: Receiver
    expires_in: float | None = 100.0
    status: int = 200
    prefix: str = "tok"
    forms: list[dict[str, str]] = field(default_factory=list)
    issued: list[str] = field(default_factory=list)
    release: asyncio.Event | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.forms.append(dict(await request.post()))  # type: ignore[arg-type]
        self.arrived.set()
        if self.release is not None:
            await self.release.wait()
        if self.status != 200:
            return web.json_response({"error": "invalid_client"}, status=self.status)
        token = f"{self.prefix}-{len(self.issued) + 1}"
        self.issued.append(token)
        body: dict[str, Any] = {"access_token": token, "token_type": "bearer"}
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        return web.json_response(body)

    @property
    def url(self) -> str:
        return self.receiver.url("/oauth/token")


@pytest.fixture
async def token_endpoint() -> AsyncIterator[TokenEndpoint]:
    found, runner = await start_receiver("127.0.0.1")
    endpoint = TokenEndpoint(found)
    found.on("/oauth/token", endpoint.handle)
    try:
        yield endpoint
    finally:
        found.closing.set()
        if endpoint.release is not None:
            endpoint.release.set()
        await runner.cleanup()


def oauth_spec(endpoint: TokenEndpoint, **extra: Any) -> OAuthClientCredentialsSpec:
    spec = parse_connection(
        {
            "type": "oauth_client_credentials",
            "token_url": endpoint.url,
            "client_id": "stellwerk",
            "client_secret": "s3cret",
            "scope": "events:write",
            **extra,
        },
        allow_private=True,
    )
    assert isinstance(spec, OAuthClientCredentialsSpec)
    return spec


def bearer_receiver(receiver: Receiver, valid: set[str]) -> None:
    async def check(request: web.Request) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        ok = header.startswith("Bearer ") and header[7:] in valid
        return web.Response(status=200 if ok else 401)

    receiver.on("/hook", check)


async def test_oauth_token_is_fetched_once_and_cached(
    receiver: Receiver, pool: SessionPool, token_endpoint: TokenEndpoint
) -> None:
    bearer_receiver(receiver, {"tok-1"})
    clock = Clock()
    auth = build_auth(oauth_spec(token_endpoint), session_pool=pool, policy=LOOPBACK, clock=clock)
    http = http_target(receiver, pool, auth)
    for _ in range(3):
        assert isinstance(await http.deliver(make_delivery()), Delivered)
        clock.advance(20)
    assert token_endpoint.issued == ["tok-1"]
    [form] = token_endpoint.forms
    assert form == {"grant_type": "client_credentials", "scope": "events:write"}
    basic = token_endpoint.receiver.seen[0].headers["Authorization"]
    assert base64.b64decode(basic.removeprefix("Basic ")) == b"stellwerk:s3cret"


async def test_oauth_token_is_refreshed_shortly_before_it_expires(
    receiver: Receiver, pool: SessionPool, token_endpoint: TokenEndpoint
) -> None:
    bearer_receiver(receiver, {"tok-1", "tok-2"})
    clock = Clock()
    auth = build_auth(oauth_spec(token_endpoint), session_pool=pool, policy=LOOPBACK, clock=clock)
    http = http_target(receiver, pool, auth)
    assert isinstance(await http.deliver(make_delivery()), Delivered)
    clock.advance(89.9)  # 100 s lifetime, refreshed 10 s early
    assert isinstance(await http.deliver(make_delivery()), Delivered)
    assert token_endpoint.issued == ["tok-1"]
    clock.advance(0.1)
    assert isinstance(await http.deliver(make_delivery()), Delivered)
    assert token_endpoint.issued == ["tok-1", "tok-2"]
    assert receiver.seen[-1].headers["Authorization"] == "Bearer tok-2"


async def test_a_401_gets_one_fresh_token_and_one_more_try(
    receiver: Receiver, pool: SessionPool, token_endpoint: TokenEndpoint
) -> None:
    valid = {"tok-1"}
    bearer_receiver(receiver, valid)
    auth = build_auth(oauth_spec(token_endpoint), session_pool=pool, policy=LOOPBACK)
    http = http_target(receiver, pool, auth)
    assert isinstance(await http.deliver(make_delivery()), Delivered)
    valid.clear()
    valid.add("tok-2")  # the receiver revoked tok-1 before it expired
    assert isinstance(await http.deliver(make_delivery()), Delivered)
    assert [seen.headers["Authorization"] for seen in receiver.seen] == [
        "Bearer tok-1",
        "Bearer tok-1",
        "Bearer tok-2",
    ]
    assert token_endpoint.issued == ["tok-1", "tok-2"]


async def test_a_401_with_a_fresh_token_gives_up(
    receiver: Receiver, pool: SessionPool, token_endpoint: TokenEndpoint
) -> None:
    bearer_receiver(receiver, set())
    auth = build_auth(oauth_spec(token_endpoint), session_pool=pool, policy=LOOPBACK)
    outcome = await http_target(receiver, pool, auth).deliver(make_delivery())
    assert isinstance(outcome, GiveUp)
    assert "HTTP 401" in outcome.reason
    assert token_endpoint.issued == ["tok-1", "tok-2"]
    assert len(receiver.seen) == 2


async def test_a_token_that_would_inject_headers_gives_up(
    receiver: Receiver, pool: SessionPool, token_endpoint: TokenEndpoint
) -> None:
    token_endpoint.prefix = "tok\r\nX-Injected: yes\r\nX-Pad: x"
    auth = build_auth(oauth_spec(token_endpoint), session_pool=pool, policy=LOOPBACK)
    outcome = await http_target(receiver, pool, auth).deliver(make_delivery())
    assert isinstance(outcome, GiveUp)
    assert "access token" in outcome.reason
    assert "Injected" not in outcome.reason
    assert receiver.seen == []


async def test_concurrent_deliveries_share_one_token_request(
    receiver: Receiver, pool: SessionPool, token_endpoint: TokenEndpoint
) -> None:
    bearer_receiver(receiver, {"tok-1"})
    token_endpoint.release = asyncio.Event()
    auth = build_auth(oauth_spec(token_endpoint), session_pool=pool, policy=LOOPBACK)
    http = http_target(receiver, pool, auth)
    deliveries = [asyncio.create_task(http.deliver(make_delivery())) for _ in range(10)]
    await token_endpoint.arrived.wait()
    token_endpoint.release.set()
    assert all(isinstance(outcome, Delivered) for outcome in await asyncio.gather(*deliveries))
    assert token_endpoint.issued == ["tok-1"]


async def test_client_secret_in_the_body_with_extra_params(
    receiver: Receiver, pool: SessionPool, token_endpoint: TokenEndpoint
) -> None:
    spec = oauth_spec(token_endpoint, client_auth="body", extra_params={"audience": "api"})
    auth = build_auth(spec, session_pool=pool, policy=LOOPBACK)
    assert isinstance(await http_target(receiver, pool, auth).deliver(make_delivery()), Delivered)
    assert token_endpoint.forms == [
        {
            "grant_type": "client_credentials",
            "audience": "api",
            "scope": "events:write",
            "client_id": "stellwerk",
            "client_secret": "s3cret",
        }
    ]
    assert "Authorization" not in token_endpoint.receiver.seen[0].headers


async def test_a_token_without_expires_in_is_kept_for_the_default_lifetime(
    receiver: Receiver, pool: SessionPool, token_endpoint: TokenEndpoint
) -> None:
    token_endpoint.expires_in = None
    clock = Clock()
    auth = build_auth(oauth_spec(token_endpoint), session_pool=pool, policy=LOOPBACK, clock=clock)
    http = http_target(receiver, pool, auth)
    await http.deliver(make_delivery())
    clock.advance(269)
    await http.deliver(make_delivery())
    assert token_endpoint.issued == ["tok-1"]
    clock.advance(1)  # 300 s default, refreshed 30 s early
    await http.deliver(make_delivery())
    assert token_endpoint.issued == ["tok-1", "tok-2"]


@pytest.mark.parametrize(("status", "kind"), [(401, GiveUp), (400, GiveUp), (503, RetryLater)])
async def test_token_endpoint_failures(
    receiver: Receiver,
    pool: SessionPool,
    token_endpoint: TokenEndpoint,
    status: int,
    kind: type[GiveUp | RetryLater],
) -> None:
    token_endpoint.status = status
    auth = build_auth(oauth_spec(token_endpoint), session_pool=pool, policy=LOOPBACK)
    outcome = await http_target(receiver, pool, auth).deliver(make_delivery())
    assert isinstance(outcome, kind)
    assert f"token endpoint: HTTP {status}" in outcome.reason
    assert "invalid_client" in outcome.reason
    assert receiver.seen == []


async def test_token_endpoint_is_guarded_at_delivery_too(
    receiver: Receiver, pool: SessionPool, token_endpoint: TokenEndpoint
) -> None:
    spec = oauth_spec(token_endpoint)  # saved while private targets were allowed
    auth = build_auth(spec, session_pool=pool, policy=AddressPolicy())
    outcome = await http_target(receiver, pool, auth).deliver(make_delivery())
    assert isinstance(outcome, GiveUp)
    assert "token_url" in outcome.reason
    assert "loopback" in outcome.reason
    assert token_endpoint.forms == []


@pytest.mark.parametrize(
    ("spec", "field", "says"),
    [
        ({}, "type", "missing"),
        ({"type": "digest"}, "type", "one of"),
        ({"type": "basic", "username": "u"}, "password", "missing"),
        ({"type": "basic", "username": 1, "password": "p"}, "username", "str"),
        ({"type": "basic", "username": "a:b", "password": "p"}, "username", "':'"),
        ({"type": "basic", "username": "u", "password": ""}, "password", "empty"),
        ({"type": "basic", "username": "u", "password": "p", "realm": "x"}, "realm", "unknown"),
        ({"type": "api_key", "header": "X Key", "value": "v"}, "header", "header name"),
        ({"type": "api_key", "header": "webhook-signature", "value": "v"}, "header", "itself"),
        ({"type": "api_key", "header": "X-Key", "value": "a\r\nb"}, "value", "line breaks"),
        ({"type": "api_key", "header": "X-Key", "value": "a\x00b"}, "value", "control"),
        ({"type": "api_key_query", "parameter": "a b", "value": "v"}, "parameter", "letters"),
        ({"type": "api_key_query", "parameter": "k", "value": ""}, "value", "empty"),
        ({"type": "api_key_query", "parameter": "k", "value": "a\nb"}, "value", "line breaks"),
        ({"type": "query", "parameter": "k", "value": "v"}, "type", "api_key_query"),
        (
            {"type": "oauth_client_credentials", "token_url": "http://169.254.169.254/token",
             "client_id": "c", "client_secret": "s"},
            "token_url",
            "link-local",
        ),
        (
            {"type": "oauth_client_credentials", "token_url": "https://auth.example.com/token",
             "client_id": "c", "client_secret": "s", "client_auth": "jwt"},
            "client_auth",
            "Invalid",
        ),
        (
            {"type": "oauth_client_credentials", "token_url": "https://auth.example.com/token",
             "client_id": "c", "client_secret": "s", "extra_params": {"grant_type": "password"}},
            "extra_params.grant_type",
            "own field",
        ),
    ],
)  # fmt: skip
def test_bad_specs_name_the_field(spec: dict[str, Any], field: str, says: str) -> None:
    with pytest.raises(InvalidConnectionError) as caught:
        parse_connection(spec)
    assert caught.value.field == field
    assert says in caught.value.reason


def test_sealed_connections_keep_secrets_encrypted_and_open_again() -> None:
    box = SecretBox(bytes(range(32)))
    specs: list[ConnectionSpec] = [
        BasicAuthSpec("u", "hunter2-pw"),
        ApiKeySpec("X-Key", "hunter2-key"),
        ApiKeyQuerySpec("api_secret", "hunter2-qk"),
        OAuthClientCredentialsSpec("https://auth.example.com/t", "cid", "hunter2-cs", scope="a"),
    ]
    for spec in specs:
        stored = seal_connection(spec, box, "acme/crm")
        assert "hunter2" not in json.dumps(stored)
        assert open_connection(stored, box, "acme/crm") == spec
        with pytest.raises(DecryptionError):
            open_connection(stored, box, "acme/other")
        view = public_view(spec)
        assert "hunter2" not in json.dumps(view)
        assert view["type"] == stored["type"]


async def test_credentials_do_not_follow_a_redirect_to_another_origin(
    receiver: Receiver, pool: SessionPool
) -> None:
    elsewhere, runner = await start_receiver("127.0.0.1")
    try:

        async def away(request: web.Request) -> web.StreamResponse:
            return web.Response(status=307, headers={"Location": elsewhere.url("/in")})

        async def same_origin(request: web.Request) -> web.StreamResponse:
            return web.Response(status=308, headers={"Location": "/away"})

        receiver.on("/hook", same_origin)
        receiver.on("/away", away)
        spec = parse_connection({"type": "api_key", "header": "X-Api-Key", "value": "k-123"})
        auth = build_auth(spec, session_pool=pool, policy=LOOPBACK)
        outcome = await http_target(receiver, pool, auth).deliver(make_delivery())
    finally:
        await runner.cleanup()
    assert isinstance(outcome, Delivered)
    assert [seen.headers.get("X-Api-Key") for seen in receiver.seen] == ["k-123", "k-123"]
    [arrived] = elsewhere.seen
    assert "X-Api-Key" not in arrived.headers
    assert arrived.headers["webhook-id"] == "ev-1"


async def test_a_token_endpoint_name_resolving_to_loopback_gives_up(
    receiver: Receiver, token_endpoint: TokenEndpoint, client: HttpClient
) -> None:
    resolver = StaticResolver({"auth.example.test": ["127.0.0.1"]})
    pool = SessionPool(resolver_factory=lambda: resolver, client=client)
    try:
        port = token_endpoint.receiver.port
        spec = parse_connection(
            {
                "type": "oauth_client_credentials",
                "token_url": f"http://auth.example.test:{port}/oauth/token",
                "client_id": "c",
                "client_secret": "s",
            }
        )
        auth = build_auth(spec, session_pool=pool, policy=AddressPolicy())
        outcome = await http_target(receiver, pool, auth).deliver(make_delivery())
    finally:
        await pool.close()
    assert isinstance(outcome, GiveUp)
    assert (
        "token endpoint: host 'auth.example.test' resolves to 127.0.0.1 (loopback)"
        in outcome.reason
    )
    assert token_endpoint.forms == []
    assert receiver.seen == []

"""The capability seam over a whole app: a capability's endpoints are gated and described, its
routes served without a key, its duties run in their role and stop with the process, and a
start that fails in its `open` is tried again with nothing left over from the first attempt
(the log's lock free, no metric family registered twice)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx
import msgspec
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from tests.conftest import Bootstrap, assert_no_task_left

from stellwerk.api import Endpoint, capability_of, json_response, principal_of
from stellwerk.app import build_app, default_capabilities
from stellwerk.auth import Scope
from stellwerk.capability import Capability, CapabilityContext, Duty, Role
from stellwerk.config import load_settings
from stellwerk.service import NotFound


class Counter:
    """A capability at work: counts its duty's turns and remembers being closed."""

    def __init__(self, context: CapabilityContext) -> None:
        self.context = context
        self.turns = 0
        self.ticked = asyncio.Event()
        self.closed = False

    async def tick(self) -> None:
        while True:
            self.turns += 1
            self.ticked.set()
            await asyncio.sleep(0.01)

    def duties(self) -> Mapping[Role, Sequence[Duty]]:
        return {Role.SCHEDULER: [Duty("counter", self.tick)]}

    async def close(self) -> None:
        self.closed = True


async def whoami(request: Request) -> Response:
    counter = capability_of(request, "counter", Counter)
    return json_response({"tenant": principal_of(request.scope).tenant, "turns": counter.turns})


async def hello(_request: Request) -> Response:
    return PlainTextResponse("hello, world")


async def test_a_start_stopped_halfway_ends_without_trying_again(tmp_path: Path) -> None:
    """A stop while the services open cancels the start. A driver may answer the cancellation
    with an error of its own (SQLAlchemy's aiosqlite adapter does); that is no failed start to
    try again: the process stops, and the log's lock is free for the next one."""
    opening = asyncio.Event()
    attempts = 0

    async def open_slowly(_context: CapabilityContext) -> Counter:
        nonlocal attempts
        attempts += 1
        opening.set()
        try:
            await asyncio.Event().wait()  # a query under way when the stop comes
        except asyncio.CancelledError:
            raise RuntimeError("the driver's own answer to a cancellation") from None
        raise AssertionError("never opened")

    slow = Capability(name="slow", open=open_slowly)
    settings = load_settings({"data_dir": str(tmp_path / "data")})
    app = build_app(settings, capabilities=[*default_capabilities(), slow])
    async with asyncio.timeout(60):
        async with app.router.lifespan_context(app):
            await opening.wait()
    assert attempts == 1
    assert app.state.lifecycle.failed_starts == 0
    again = build_app(settings)
    async with asyncio.timeout(60), again.router.lifespan_context(again):
        await again.state.lifecycle.wait_started()


async def test_a_capability_is_mounted_opened_run_and_closed_and_its_failed_start_retried(
    tmp_path: Path,
) -> None:
    attempts: list[Counter] = []

    async def open_counter(context: CapabilityContext) -> Counter:
        counter = Counter(context)
        attempts.append(counter)
        if len(attempts) == 1:
            raise ConnectionError("the database went away")  # a store down at start
        return counter

    capability = Capability(
        name="counter",
        open=open_counter,
        endpoints=[Endpoint("get", "/v1/whoami", whoami, "Who am I", "counter", Scope.READ)],
        routes=[Route("/hello", hello)],
    )
    settings = load_settings({"data_dir": str(tmp_path / "data")})
    app = build_app(settings, capabilities=[*default_capabilities(), capability])
    async with app.router.lifespan_context(app):
        services = await asyncio.wait_for(app.state.lifecycle.wait_started(), 30)
        assert len(attempts) == 2
        assert app.state.lifecycle.failed_starts == 1
        counter = services.capabilities["counter"]
        assert counter is attempts[1]
        await asyncio.wait_for(counter.ticked.wait(), 10)
        bootstrap = msgspec.json.decode(
            (settings.data_dir / "bootstrap.json").read_bytes(), type=Bootstrap
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://s") as client:
            assert (await client.get("/v1/whoami")).status_code == 401
            me = await client.get(
                "/v1/whoami", headers={"Authorization": f"Bearer {bootstrap.admin_key}"}
            )
            assert me.status_code == 200
            assert me.json()["tenant"] == "default"
            assert me.json()["turns"] >= 1
            assert (await client.get("/hello")).text == "hello, world"
            document = (await client.get("/openapi.json")).json()
            assert "/v1/whoami" in document["paths"]
            assert "/hello" not in document["paths"]
            metrics = await client.get("/metrics")
            assert metrics.status_code == 200
            # Each family once, though the first attempt registered them too.
            help_lines = [line for line in metrics.text.splitlines() if line.startswith("# HELP")]
            assert len(help_lines) == len(set(help_lines))
    assert counter.closed
    assert not attempts[0].closed  # never opened: nothing to close
    await assert_no_task_left()


class Peek:
    """A capability that looks up what another one offers (it may not import it)."""

    def __init__(self, context: CapabilityContext) -> None:
        self.facades = context.facades

    def duties(self) -> Mapping[Role, Sequence[Duty]]:
        return {}

    async def close(self) -> None:
        return None


async def peek(request: Request) -> Response:
    endpoints = capability_of(request, "peek", Peek).facades.global_endpoints
    if endpoints is None:
        return json_response({"offered": False})
    principal = principal_of(request.scope)
    try:
        await endpoints.get(principal, "missing")
    except NotFound:
        missing = "not found"
    return json_response(
        {
            "offered": True,
            "missing": missing,
            "endpoints": [
                [e.name, e.spec.primary, e.spec.secondary, list(e.spec.buses), e.state, e.active]
                for e in await endpoints.all(principal)
            ],
        }
    )


async def test_a_capability_finds_the_global_endpoints_the_sites_capability_offers(
    tmp_path: Path,
) -> None:
    async def open_peek(context: CapabilityContext) -> Peek:
        return Peek(context)

    capability = Capability(
        name="peek",
        open=open_peek,
        endpoints=[Endpoint("get", "/v1/peek", peek, "Peek", "peek", Scope.READ)],
    )
    for with_sites in (True, False):
        settings = load_settings(
            {"data_dir": str(tmp_path / f"data-{with_sites}"), "allow_private_targets": "true"}
        )
        mounted = [c for c in default_capabilities() if with_sites or c.name != "sites"]
        app = build_app(settings, capabilities=[capability, *mounted])  # peek opens first
        async with app.router.lifespan_context(app):
            await asyncio.wait_for(app.state.lifecycle.wait_started(), 30)
            key = msgspec.json.decode(
                (settings.data_dir / "bootstrap.json").read_bytes(), type=Bootstrap
            ).admin_key
            headers = {"Authorization": f"Bearer {key}"}
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://s", headers=headers
            ) as client:
                if not with_sites:
                    assert (await client.get("/v1/peek")).json() == {"offered": False}
                    continue
                peer = {"url": "http://127.0.0.1:9", "secret": "s" * 16}
                assert (await client.put("/v1/peers/b", json=peer)).status_code == 201
                spec = {"primary": "local", "secondary": "b", "buses": ["default"]}
                assert (await client.put("/v1/endpoints/e", json=spec)).status_code == 201
                assert (await client.get("/v1/peek")).json() == {
                    "offered": True,
                    "missing": "not found",
                    "endpoints": [["e", "local", "b", ["default"], "healthy", "local"]],
                }
    await assert_no_task_left()

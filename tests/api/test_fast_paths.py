"""A capability's fast path on a whole app: what it answers is sent ahead of Starlette's stack
and counted in the HTTP metrics under the route it names; what it declines, and what it fails
on, the app's own route answers. A request it takes whole (a `Deferred`) it answers in full,
and a fault there is a 500, since the body is read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import structlog
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope
from tests.api.test_metrics_middleware import duration_count, in_flight, requests_total

from stellwerk.api import ClientGone, FastPaths, IngestFastPath, whole_body
from stellwerk.app import App, build_app
from stellwerk.capability import (
    Answer,
    Answerer,
    Capability,
    CapabilityContext,
    Deferred,
    Duty,
    Opened,
    Role,
)
from stellwerk.config import load_settings
from stellwerk.ops import Metrics

GREETING = Answer(
    "/greeting/{name}",
    200,
    [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"4")],
    b"hi!\n",
)


class Greeter:
    """Knows one greeting by heart; the route renders every other."""

    def __init__(self) -> None:
        self.known = {"/greeting/ada": GREETING}
        self.broken = False
        self.taken_broken = False

    def answer(self, scope: Scope) -> Answer | Deferred | None:
        if self.broken:
            raise RuntimeError("the fast path is broken")
        if scope["method"] == "PUT":  # taken whole: the body is the greeting
            return Deferred("/greeting/{name}", self.echo)
        if scope["method"] not in ("GET", "HEAD"):
            return None
        return self.known.get(scope["path"])

    async def echo(self, receive: Receive) -> Answer:
        message = await receive()
        if self.taken_broken:
            raise RuntimeError("the fast path broke after reading the body")
        body = b"hi, " + message["body"] + b"\n"
        return Answer("/greeting/{name}", 201, [(b"content-length", b"%d" % len(body))], body)

    def duties(self) -> Mapping[Role, Sequence[Duty]]:
        return {}

    async def close(self) -> None:
        pass


async def greeting(request: Request) -> Response:
    return PlainTextResponse(f"hello, {request.path_params['name']}\n")


async def open_greeter(_context: CapabilityContext) -> Greeter:
    return Greeter()


def fast_path(opened: Opened) -> Answerer:
    assert isinstance(opened, Greeter)
    return opened.answer


@dataclass
class Served:
    app: App
    client: httpx.AsyncClient
    greeter: Greeter

    @property
    def metrics(self) -> Metrics:
        metrics: Metrics = self.app.state.metrics
        return metrics

    async def call(
        self, method: str, path: str, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> tuple[list[Message], Scope]:
        """The messages the app sends for a request, and the scope after it (the router
        writes the route it matched into it)."""
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"s"), *headers],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
        }
        sent: list[Message] = []

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Message) -> None:
            sent.append(message)

        await self.app(scope, receive, send)
        return sent, scope


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    capability = Capability(
        name="greeter",
        open=open_greeter,
        routes=[Route("/greeting/{name}", greeting, methods=["GET", "HEAD", "POST"])],
        fast_path=fast_path,
    )
    app = build_app(load_settings({"data_dir": str(tmp_path)}), capabilities=[capability])
    async with app.router.lifespan_context(app):
        services = await asyncio.wait_for(app.state.lifecycle.wait_started(), 30)
        greeter = services.capabilities["greeter"]
        assert isinstance(greeter, Greeter)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://s") as client:
            yield Served(app, client, greeter)


async def test_an_answer_is_sent_ahead_of_the_stack_and_counted_under_its_route(
    served: Served,
) -> None:
    sent, scope = await served.call("GET", "/greeting/ada")
    assert "route" not in scope  # no router saw it
    assert sent == [
        {"type": "http.response.start", "status": 200, "headers": list(GREETING.headers)},
        {"type": "http.response.body", "body": b"hi!\n"},
    ]
    # Each request gets a list of its own: a layer outside may add to it.
    assert sent[0]["headers"] is not GREETING.headers
    head = await served.client.head("/greeting/ada")
    assert head.status_code == 200
    assert head.headers["content-length"] == "4"
    assert requests_total(served.metrics, "GET", "/greeting/{name}", 200) == 1
    assert requests_total(served.metrics, "HEAD", "/greeting/{name}", 200) == 1
    assert duration_count(served.metrics, "GET", "/greeting/{name}") == 1
    assert in_flight(served.metrics) == 0


async def test_the_fast_paths_come_before_starlette_s_error_layer_and_every_middleware(
    served: Served,
) -> None:
    # Their answers need none of those layers, which cost more than the answer itself. Only
    # ingest's fast path comes before them: it answers no path of theirs.
    await served.call("GET", "/greeting/ada")
    stack = served.app.middleware_stack
    assert isinstance(stack, IngestFastPath)
    assert isinstance(stack.app, FastPaths)
    assert isinstance(stack.app.app, ServerErrorMiddleware)


async def test_behind_the_fast_paths_a_trusted_proxy_s_headers_still_apply(
    served: Served,
) -> None:
    # `stellwerk serve` hands them over from uvicorn, which would apply them ahead of the app.
    served.app.take_proxy_headers("127.0.0.1")
    forwarded = [(b"x-forwarded-for", b"203.0.113.7"), (b"x-forwarded-proto", b"https")]
    sent, scope = await served.call("GET", "/greeting/grace", forwarded)
    assert sent[-1]["body"] == b"hello, grace\n"
    assert scope["client"] == ("203.0.113.7", 0)
    assert scope["scheme"] == "https"
    sent, scope = await served.call("GET", "/greeting/ada", forwarded)
    assert sent[-1]["body"] == b"hi!\n"  # the fast path's answer, which needs neither
    assert "route" not in scope
    with pytest.raises(RuntimeError, match="before the first request"):
        served.app.take_proxy_headers("127.0.0.1")


async def test_what_it_declines_the_route_answers(served: Served) -> None:
    sent, scope = await served.call("GET", "/greeting/grace")
    assert scope["route"].path == "/greeting/{name}"
    assert sent[-1]["body"] == b"hello, grace\n"
    posted = await served.client.post("/greeting/ada")
    assert posted.text == "hello, ada\n"
    assert requests_total(served.metrics, "GET", "/greeting/{name}", 200) == 1
    assert requests_total(served.metrics, "POST", "/greeting/{name}", 200) == 1


async def test_a_failing_fast_path_is_logged_and_the_route_answers(served: Served) -> None:
    served.greeter.broken = True
    with structlog.testing.capture_logs() as logs:
        sent, scope = await served.call("GET", "/greeting/ada")
    assert scope["route"].path == "/greeting/{name}"
    assert sent[-1]["body"] == b"hello, ada\n"
    assert [entry["event"] for entry in logs] == ["a fast path failed"]


async def test_a_request_taken_whole_is_answered_by_the_fast_path(served: Served) -> None:
    put = await served.client.put("/greeting/ada", content=b"grace")
    assert (put.status_code, put.text) == (201, "hi, grace\n")
    assert requests_total(served.metrics, "PUT", "/greeting/{name}", 201) == 1
    assert in_flight(served.metrics) == 0


async def test_a_fault_after_the_body_was_read_is_a_logged_500(served: Served) -> None:
    served.greeter.taken_broken = True
    with structlog.testing.capture_logs() as logs:
        put = await served.client.put("/greeting/ada", content=b"grace")
    assert put.status_code == 500
    assert put.json()["error"] == "InternalError"
    assert [entry["event"] for entry in logs] == ["a fast path failed"]
    assert requests_total(served.metrics, "PUT", "/greeting/{name}", 500) == 1
    assert in_flight(served.metrics) == 0


def _receiving(*messages: Message) -> Receive:
    queue = list(messages)

    async def receive() -> Message:
        return queue.pop(0)

    return receive


async def test_a_whole_body_is_limited_whether_it_came_in_one_message_or_several() -> None:
    def too_large(limit: int) -> Exception:
        return ValueError(f"over {limit}")

    one = {"type": "http.request", "body": b"x" * 11, "more_body": False}
    with pytest.raises(ValueError, match="over 10"):
        await whole_body(_receiving(one), 10, too_large)
    first = {"type": "http.request", "body": b"x" * 6, "more_body": True}
    with pytest.raises(ValueError, match="over 10"):
        await whole_body(_receiving(first, {**first, "more_body": False}), 10, too_large)
    assert await whole_body(_receiving({**one, "body": b"x" * 10}), 10, too_large) == b"x" * 10
    parts = (first, {"type": "http.request", "body": b"yz"})
    assert await whole_body(_receiving(*parts), 10, too_large) == b"x" * 6 + b"yz"
    with pytest.raises(ClientGone):
        await whole_body(_receiving(first, {"type": "http.disconnect"}), 10, too_large)

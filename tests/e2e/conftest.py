"""End-to-end fixtures: the whole app with private targets allowed, and real HTTP receivers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web
from tests.conftest import RunningApp, app_running, free_port
from tests.e2e.receiving import Received, running_receiver

from stellwerk.config import load_settings


@pytest.fixture
async def delivering_app(tmp_path: Path) -> AsyncIterator[RunningApp]:
    settings = load_settings(
        {
            "data_dir": str(tmp_path / "data"),
            "allow_private_targets": "true",
            "function_modules": "tests.e2e",
        }
    )
    async with app_running(settings) as running:
        yield running


Behaviour = Callable[[web.Request, int], Awaitable[web.StreamResponse]]


@dataclass
class Receiver:
    """A real HTTP server on loopback that records what it receives and answers as told."""

    url: str
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def wait_for(self, count: int, within: float = 30) -> None:
        async with asyncio.timeout(within), self.arrived:
            await self.arrived.wait_for(lambda: len(self.received) >= count)

    def bodies(self) -> list[Any]:
        return [msgspec.json.decode(body) for _, body in self.received]


@pytest.fixture
async def receiver_factory() -> AsyncIterator[Callable[[Behaviour | None], Awaitable[Receiver]]]:
    runners: list[web.AppRunner] = []

    async def start(behaviour: Behaviour | None = None) -> Receiver:
        port = free_port()
        receiver = Receiver(url=f"http://127.0.0.1:{port}/hook")
        calls = 0

        async def handle(request: web.Request) -> web.StreamResponse:
            nonlocal calls
            calls += 1
            body = await request.read()
            response = await behaviour(request, calls) if behaviour else web.Response(status=204)
            if 200 <= response.status < 300:
                async with receiver.arrived:
                    receiver.received.append((dict(request.headers), body))
                    receiver.arrived.notify_all()
            return response

        app = web.Application()
        app.router.add_post("/hook", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
        return receiver

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
def threaded_receiver() -> Iterator[tuple[Received, str]]:
    """A started receiver and the URL to send to; shut down after the test."""
    with running_receiver() as receiver:
        yield receiver

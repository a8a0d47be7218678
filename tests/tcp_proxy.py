"""A TCP relay on loopback for tests that take a server out of reach and bring it back (a
database, a peer site)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any

from tests.nats_support import free_port


class TcpProxy:
    """A TCP relay on loopback in a thread of the test, to take a database out of reach: `cut`
    closes the listener and every live connection (refused from then on), `restore` listens on
    the same port again. `delay` (seconds, settable at any time) holds back every chunk relayed,
    for a server that answers, but slowly."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._live: set[asyncio.StreamWriter] = set()
        # The task relaying each connection: `cut` cancels and awaits them, or one waiting (on
        # a read, or holding a chunk back) would be left pending in the stopped loop.
        self._relays: set[asyncio.Task[None]] = set()
        self.delay = 0.0
        self.held = 0  # chunks being held back by `delay` now

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        self.restore()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def restore(self) -> None:
        self._call(self._listen())

    def cut(self) -> None:
        self._call(self._close())

    def _call(self, work: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(work, self._loop).result(5)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in self._live:
            writer.transport.abort()
        self._live.clear()
        relays = list(self._relays)
        for relay in relays:
            relay.cancel()
        await asyncio.gather(*relays, return_exceptions=True)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        relay = asyncio.current_task()
        assert relay is not None
        self._relays.add(relay)
        self._live.add(writer)
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection(
                    "127.0.0.1", self.upstream_port
                )
            except OSError:
                return
            self._live.add(up_writer)
            try:
                await asyncio.gather(
                    self._pipe(reader, up_writer),
                    self._pipe(up_reader, writer),
                    return_exceptions=True,
                )
            finally:
                self._live.discard(up_writer)
                up_writer.transport.abort()
        finally:
            self._live.discard(writer)
            writer.transport.abort()
            self._relays.discard(relay)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if self.delay:
                    self.held += 1
                    try:
                        await asyncio.sleep(self.delay)
                    finally:
                        self.held -= 1
                writer.write(data)
                await writer.drain()
        finally:
            self._live.discard(writer)
            writer.transport.abort()

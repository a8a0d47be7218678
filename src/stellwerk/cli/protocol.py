"""uvicorn's httptools protocol, with each response's head and first body part sent together.

uvicorn writes a response's status line and headers to the socket when the app sends
`http.response.start`, and its body when it sends `http.response.body`: two `send` system calls
and, on a connection without Nagle's delay, two TCP segments for a response of a few dozen
bytes. Each costs the server a system call and the loopback's delivery in the kernel, and wakes
the client twice. Here a response's writes go through `HeldWrites`: the first one is held until
the next write or the end of the event loop's current round, whichever comes first, and the
second is joined to it. An app that answers at once (every route: its start and its body come
in the same round) sends one segment; a streaming response's head goes out at the end of the
round it was started in, as before give or take that round.

Everything else is uvicorn's own: parsing, keep-alive, pipelining, flow control, limits.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["HeldWrites", "JoinedWritesProtocol"]


class HeldWrites:
    """A transport for one response cycle: holds a first write until the next write, a close
    or the end of the loop's round, then writes once. Every other use goes to the transport."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is None:
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self._held = None
            self._transport.write(held + data)

    def flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class JoinedWritesProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` whose response cycles write through `HeldWrites`."""

    def on_headers_complete(self) -> None:
        cycle = self.cycle
        super().on_headers_complete()
        if self.cycle is not cycle and self.cycle is not None:
            self.cycle.transport = HeldWrites(self.transport, self.loop)  # type: ignore[assignment]

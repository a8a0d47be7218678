"""A minimal HTTP/1.1 client connection on asyncio's protocol API, for load generation.

General clients (aiohttp, httpx) spend more CPU per request than a small server needs to answer
one; on a machine where the generator shares cores with the server that would measure the client.
This one sends prebuilt request bytes on a keep-alive connection and parses only what it needs from
the answer: the status, the body length (`Content-Length` or chunked) and `Connection: close`.
One request is in flight per connection (no pipelining), as with ordinary clients.
"""

from __future__ import annotations

import asyncio
from typing import Final, cast

_HEAD_END: Final = b"\r\n\r\n"
_MAX_HEAD: Final = 64 * 1024


class ConnectionClosed(Exception):
    """The server closed the connection (or it broke) before a full answer arrived."""


class ProtocolError(Exception):
    """The answer was not HTTP/1.1 as this client understands it."""


class HttpConnection(asyncio.Protocol):
    """One keep-alive connection; `await request(data)` returns `(status, body)`."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._closed: BaseException | None = None
        self.keep_alive = True

    @classmethod
    async def open(cls, host: str, port: int) -> HttpConnection:
        loop = asyncio.get_running_loop()
        _transport, protocol = await loop.create_connection(cls, host, port)
        return protocol

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, but have its methods.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        try:
            answer = self._parse()
        except ProtocolError as exc:
            waiter.set_exception(exc)
            self.close()
            return
        if answer is not None:
            self._waiter = None
            waiter.set_result(answer)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = exc or ConnectionClosed("the server closed the connection")
        self.keep_alive = False
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionClosed(str(self._closed) or type(self._closed).__name__))

    # -- requests ------------------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        return self._closed is None and self.keep_alive and self._transport is not None

    def request(self, data: bytes) -> asyncio.Future[tuple[int, bytes]]:
        """Send one complete request; the future gets `(status, body)` of its answer."""
        if self._waiter is not None:
            raise RuntimeError("one request at a time on a connection")
        if not self.usable or self._transport is None:
            raise ConnectionClosed("the connection is closed")
        waiter: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        self._transport.write(data)
        return waiter

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _parse(self) -> tuple[int, bytes] | None:
        buffer = self._buffer
        end = buffer.find(_HEAD_END)
        if end < 0:
            if len(buffer) > _MAX_HEAD:
                raise ProtocolError("answer head too long")
            return None
        if not buffer.startswith(b"HTTP/1."):
            raise ProtocolError(f"not an HTTP/1.x answer: {bytes(buffer[:40])!r}")
        try:
            status = int(buffer[9:12])
        except ValueError:
            raise ProtocolError(f"bad status line: {bytes(buffer[:40])!r}") from None
        head = bytes(buffer[:end]).lower()
        start = end + 4
        length = _header(head, b"content-length")
        if length is not None:
            try:
                size = int(length)
            except ValueError:
                raise ProtocolError(f"bad Content-Length {length!r}") from None
            if len(buffer) < start + size:
                return None
            body = bytes(buffer[start : start + size])
            del buffer[: start + size]
        elif _header(head, b"transfer-encoding") == b"chunked":
            parsed = _dechunk(buffer, start)
            if parsed is None:
                return None
            body, consumed = parsed
            del buffer[:consumed]
        else:
            raise ProtocolError("answer without Content-Length or chunked encoding")
        if _header(head, b"connection") == b"close" or head.startswith(b"http/1.0"):
            self.keep_alive = False
        return status, body


def _header(head: bytes, name: bytes) -> bytes | None:
    """The value of header `name` in a lower-cased head, or None."""
    at = head.find(b"\r\n" + name + b":")
    if at < 0:
        return None
    value_start = at + len(name) + 3
    value_end = head.find(b"\r\n", value_start)
    return head[value_start : value_end if value_end >= 0 else len(head)].strip()


def _dechunk(buffer: bytearray, start: int) -> tuple[bytes, int] | None:
    """A complete chunked body from `start`: (body, bytes consumed), or None if more is needed."""
    pieces: list[bytes] = []
    at = start
    while True:
        line_end = buffer.find(b"\r\n", at)
        if line_end < 0:
            return None
        size_text = bytes(buffer[at:line_end]).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise ProtocolError(f"bad chunk size {size_text!r}") from None
        at = line_end + 2
        if size == 0:
            while True:  # skip trailer lines up to the empty line that ends the body
                line_end = buffer.find(b"\r\n", at)
                if line_end < 0:
                    return None
                if line_end == at:
                    return b"".join(pieces), at + 2
                at = line_end + 2
        if len(buffer) < at + size + 2:
            return None
        pieces.append(bytes(buffer[at : at + size]))
        at += size + 2

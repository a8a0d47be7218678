"""A kept peer stream for synchronous replication: one WebSocket per tenant and peer site
(`GET /v1/peers/{site}/stream`), carrying signed, numbered batches of replicated events and the
peer's signed answers, matched by number, many in flight at a time.

An HTTP request per local group cost about 1 ms of Python and HTTP on both sides, most of
sync's latency beyond the peer's fsync (docs/global-endpoints.md, "sites8"). On a kept
connection a batch is one frame each way.

Authentication, both ways, with the pair's shared secret:

- The upgrade request is signed like every peer request (`signing.py`: timestamp, site,
  tenant, `GET`, the path, no body); a wrong one gets 401 and is logged (`peer request
  refused`), as is one of a tenant whose pairing has not settled (409).
- The peer's first frame is a fresh random nonce and an HMAC over it and the upgrade's
  signature: the sender learns that the other end holds the secret too before it sends.
- Every frame then carries an HMAC-SHA256 over a direction byte, the connection's nonce, the
  frame's number and its body: a frame cannot be altered, sent back the other way, replayed on
  another connection (another nonce) or on this one (numbers only rise). A frame that fails
  this is answered 401, logged, and the connection closed.

Frames (binary; numbers big-endian):
  batch  = number (8) | mac (32) | body (as `POST /v1/peers/{site}/events`)
  answer = number (8) | status (2) | mac (32) | body (as that route's answer)
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import struct
import time
from typing import Final

import aiohttp
import structlog

from stellwerk.auth import Principal
from stellwerk.capability import Outgoing
from stellwerk.refs import TenantId
from stellwerk.sites.peers import Peers
from stellwerk.sites.signing import SIGNATURE, signed_headers

log = structlog.get_logger("stellwerk.sites")

ROUTE: Final = "/v1/peers/{site}/stream"
NUMBER: Final = struct.Struct(">Q")
ANSWER_HEAD: Final = struct.Struct(">QH")
MAC_BYTES: Final = 32
_HELLO: Final = b"stellwerk-stream-hello\n"
_TO_PEER: Final = b"q"
_FROM_PEER: Final = b"a"
NONCE_BYTES: Final = 16
# The largest answer frame the sender reads (answers are a few dozen bytes of JSON).
ANSWER_LIMIT: Final = 1 << 20
# After a peer refused the upgrade as a route it lacks (an older version), batches go as HTTP
# requests for this long before the stream is tried again.
UNSUPPORTED_SECONDS: Final = 60.0
# How a peer without the route answers an upgrade (Starlette closes an unknown WebSocket
# path, which uvicorn answers 403).
REFUSED_AS_UNKNOWN: Final = frozenset((403, 404, 405))


class StreamRefused(Exception):
    """The peer answered the upgrade with an HTTP status: `status` says which."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def stream_path(local_site: str) -> str:
    return f"/v1/peers/{local_site}/stream"


def hello_mac(secret: bytes, nonce: bytes, signature: str) -> bytes:
    return hmac.new(secret, _HELLO + nonce + signature.encode(), hashlib.sha256).digest()


class Macs:
    """HMACs keyed with the pair's secret and bound to one connection's nonce (each frame's
    is a copy of a prepared one: the key's schedule is computed once per connection)."""

    __slots__ = ("_answers", "_batches")

    def __init__(self, secret: bytes, nonce: bytes) -> None:
        self._batches = hmac.new(secret, _TO_PEER + nonce, hashlib.sha256)
        self._answers = hmac.new(secret, _FROM_PEER + nonce, hashlib.sha256)

    def batch(self, number: bytes, body: bytes) -> bytes:
        mac = self._batches.copy()
        mac.update(number)
        mac.update(body)
        return mac.digest()

    def answer(self, head: bytes, body: bytes) -> bytes:
        mac = self._answers.copy()
        mac.update(head)
        mac.update(body)
        return mac.digest()


# --- the sending side --------------------------------------------------------------------


class _Stream:
    """One open stream to a peer, and the batches it waits for answers to."""

    def __init__(
        self, ws: aiohttp.ClientWebSocketResponse, url: str, secret: str, macs: Macs
    ) -> None:
        self.ws = ws
        self.url = url
        self.secret = secret
        self.macs = macs
        self.number = 0
        self.waiting: dict[int, asyncio.Future[tuple[int, bytes]]] = {}
        self.closed = False
        self.reader: asyncio.Task[None] | None = None

    def fail(self, problem: str) -> None:
        self.closed = True
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(ConnectionError(problem))
        self.waiting.clear()

    async def read(self) -> None:
        problem = "the peer closed the stream"
        try:
            async for message in self.ws:
                if message.type is not aiohttp.WSMsgType.BINARY:
                    problem = f"the stream ended ({message.type.name})"
                    break
                data: bytes = message.data
                if len(data) < ANSWER_HEAD.size + MAC_BYTES:
                    problem = "the peer sent a frame too short for an answer"
                    break
                head = data[: ANSWER_HEAD.size]
                mac = data[ANSWER_HEAD.size : ANSWER_HEAD.size + MAC_BYTES]
                body = data[ANSWER_HEAD.size + MAC_BYTES :]
                if not hmac.compare_digest(mac, self.macs.answer(head, body)):
                    problem = "an answer on the stream is not signed with the pair's secret"
                    log.warning("peer stream answer refused", url=self.url, reason=problem)
                    break
                number, status = ANSWER_HEAD.unpack(head)
                future = self.waiting.pop(number, None)
                if future is not None and not future.done():
                    future.set_result((status, body))
        except Exception as exc:
            problem = f"{type(exc).__name__}: {exc}"
        finally:
            self.fail(problem)
            await self.ws.close()

    async def send(self, body: bytes, within: float) -> tuple[int, bytes]:
        """The peer's answer to one batch: its status and body; TimeoutError after `within`
        seconds. The bound holds for the frame's write too: a peer that has stopped reading
        fills the socket's buffers, and the write then waits for it to read again (`timeout`
        costs a timer, as a timer on the answer's future did; `wait_for` costs a task)."""
        self.number += 1
        key = self.number
        number = NUMBER.pack(key)
        future: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self.waiting[key] = future
        try:
            async with asyncio.timeout(within):
                # Uncompressed, a frame is written before `send_bytes` first yields, so frames
                # leave in the order of their numbers, which the peer requires (replays); a
                # write cut short by the bound ends the stream (`PeerStreams.send`).
                await self.ws.send_bytes(number + self.macs.batch(number, body) + body)
                return await future
        finally:
            self.waiting.pop(key, None)
            if future.done() and not future.cancelled():
                future.exception()  # retrieved, whatever ended the wait


class PeerStreams:
    """The sending side: the process's streams to its tenants' peers, opened when first
    needed and again after one ends."""

    def __init__(self, peers: Peers, outgoing: Outgoing) -> None:
        self._peers = peers
        self._outgoing = outgoing
        self._streams: dict[tuple[TenantId, str], _Stream] = {}
        self._opening: dict[tuple[TenantId, str], asyncio.Future[_Stream]] = {}
        # (tenant, peer) -> until when its batches go as HTTP requests (an older peer).
        self._unsupported: dict[tuple[TenantId, str], float] = {}

    def supported(self, principal: Principal, site: str) -> bool:
        until = self._unsupported.get((principal.tenant_id, site))
        return until is None or until <= time.monotonic()

    async def send(self, principal: Principal, site: str, body: bytes, within: float) -> str | None:
        """Send one batch of replicated events (`POST /v1/peers/{site}/events`'s body) on the
        stream to `site`: None once the peer answered that it stored them, else what went
        wrong. Raises `StreamRefused` when the peer refused the stream itself (not a route it
        has: the caller sends the batch as an HTTP request instead)."""
        deadline = time.monotonic() + within
        key = (principal.tenant_id, site)
        try:
            stream = await self._stream(principal, site, within)
        except StreamRefused as exc:
            if exc.status not in REFUSED_AS_UNKNOWN:
                return str(exc)  # the peer's word (the pairing, not ready): as for HTTP's
            self._unsupported[key] = time.monotonic() + UNSUPPORTED_SECONDS
            raise
        except (aiohttp.ClientError, TimeoutError, OSError, ConnectionError) as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if stream is None:
            return f"tenant {principal.tenant!r} has no peer {site!r}"
        try:
            status, answer = await stream.send(body, max(deadline - time.monotonic(), 0.0))
        except TimeoutError:
            # Ended, so that the next batch does not queue behind a connection that hangs.
            self._drop(key, stream, f"no answer within {within:g} s")
            return f"no answer on the stream within {within:g} s"
        except (aiohttp.ClientError, OSError, ConnectionError) as exc:
            self._drop(key, stream, str(exc))
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if 200 <= status < 300:
            return None
        return f"HTTP {status}: {answer[:300].decode(errors='replace')}"

    async def _stream(self, principal: Principal, site: str, within: float) -> _Stream | None:
        record = await self._peers.record(principal, site)
        if record is None:
            return None
        key = (principal.tenant_id, site)
        secret = self._peers.secret(principal, record)
        stream = self._streams.get(key)
        if stream is not None and not stream.closed:
            if stream.url == record.url and stream.secret == secret:
                return stream
            self._drop(key, stream, "the pairing changed")
        opening = self._opening.get(key)
        if opening is None:
            opening = asyncio.get_running_loop().create_future()
            self._opening[key] = opening
            try:
                stream = await asyncio.wait_for(
                    self._open(principal, site, record.url, secret), within
                )
            except asyncio.CancelledError:
                opening.cancel()
                raise
            except Exception as exc:
                opening.set_exception(exc)
                opening.exception()  # retrieved: the ones waiting on it raise it too
                raise
            else:
                opening.set_result(stream)
                self._streams[key] = stream
            finally:
                del self._opening[key]
            return stream
        return await asyncio.wait_for(asyncio.shield(opening), within)

    async def _open(
        self,
        principal: Principal,
        site: str,
        url: str,
        secret: str,
    ) -> _Stream:
        path = stream_path(self._peers.local_site)
        headers = signed_headers(
            secret,
            site=self._peers.local_site,
            tenant=principal.tenant,
            timestamp=int(time.time()),
            method="GET",
            path=path,
            body=b"",
        )
        try:
            ws = await self._outgoing.session().ws_connect(
                url + path, headers=headers, autoping=True, max_msg_size=ANSWER_LIMIT, compress=0
            )
        except aiohttp.WSServerHandshakeError as exc:
            raise StreamRefused(
                exc.status, f"the peer refused the stream: HTTP {exc.status} {exc.message}"
            ) from None
        try:
            hello = await ws.receive_bytes()
            nonce, mac = hello[:NONCE_BYTES], hello[NONCE_BYTES:]
            expected = hello_mac(secret.encode(), nonce, headers[SIGNATURE])
            if len(nonce) != NONCE_BYTES or not hmac.compare_digest(mac, expected):
                log.warning("peer stream refused", site=site, reason="bad hello")
                raise ConnectionError("the peer's hello is not signed with the pair's secret")
        except BaseException:
            await ws.close()
            raise
        stream = _Stream(ws, url, secret, Macs(secret.encode(), nonce))
        stream.reader = asyncio.create_task(stream.read(), name=f"sites-stream-{site}")
        return stream

    def _drop(self, key: tuple[TenantId, str], stream: _Stream, problem: str) -> None:
        if self._streams.get(key) is stream:
            del self._streams[key]
        stream.fail(problem)
        if stream.reader is not None:
            stream.reader.cancel()

    def close(self) -> None:
        for key, stream in list(self._streams.items()):
            self._drop(key, stream, "closing")

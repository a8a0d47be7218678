"""The receiving side of the kept peer stream (`GET /v1/peers/{site}/stream`, `stream.py`):
the signed upgrade checked like any peer request, then each signed, numbered batch taken as
`POST /v1/peers/{site}/events` takes it, answered on the stream by number."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
from typing import Final, cast

import msgspec
import structlog
from starlette.requests import Request
from starlette.websockets import WebSocket, WebSocketDisconnect

from stellwerk.api import answer_to, capability_of
from stellwerk.auth import Principal
from stellwerk.service import Unauthorized
from stellwerk.sites.opened import NAME, SitesOpened
from stellwerk.sites.replication import take_replicas
from stellwerk.sites.routes import check_sender
from stellwerk.sites.signing import SIGNATURE
from stellwerk.sites.stream import ANSWER_HEAD, MAC_BYTES, NONCE_BYTES, NUMBER, Macs, hello_mac

log = structlog.get_logger("stellwerk.sites")

_encode: Final = msgspec.json.Encoder().encode


async def peer_stream(websocket: WebSocket) -> None:
    """`GET /v1/peers/{site}/stream`: take a peer's batches until it leaves."""
    path: str = websocket.scope["path"]
    headers = websocket.headers
    try:
        sites = capability_of(cast(Request, websocket), NAME, SitesOpened)
        principal, record = await sites.peers.authenticate(headers, "GET", path, b"")
        check_sender(principal, record, websocket.path_params["site"], path)
    except Exception as exc:
        error = answer_to(exc, "GET", path)
        if "websocket.http.response" in websocket.scope.get("extensions", {}):
            await websocket.send_denial_response(error.response())
        else:  # the server cannot answer with a status: it says 403
            await websocket.close(1008)
        return
    secret = sites.peers.secret(principal, record)
    nonce = os.urandom(NONCE_BYTES)
    await websocket.accept()
    await websocket.send_bytes(nonce + hello_mac(secret.encode(), nonce, headers[SIGNATURE]))
    await _Receiver(sites, websocket, principal, record.site, secret, nonce, path).run()


class _Receiver:
    def __init__(
        self,
        sites: SitesOpened,
        websocket: WebSocket,
        principal: Principal,
        site: str,
        secret: str,
        nonce: bytes,
        path: str,
    ) -> None:
        self._sites = sites
        self._ws = websocket
        self._principal = principal
        self._site = site
        self._secret = secret
        self._macs = Macs(secret.encode(), nonce)
        self._path = path
        self._last = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        try:
            while True:
                try:
                    data = await self._ws.receive_bytes()
                except (WebSocketDisconnect, KeyError, RuntimeError):
                    return  # gone (KeyError/RuntimeError: a text frame, a close)
                refusal = self._check(data)
                if refusal is not None:
                    number = NUMBER.unpack(data[:8])[0] if len(data) >= 8 else 0
                    log.warning(
                        "peer request refused",
                        site=self._site,
                        tenant=self._principal.tenant,
                        path=self._path,
                        reason=refusal,
                    )
                    await self._answer(
                        number,
                        401,
                        b'{"error":"Unauthorized","message":'
                        + _encode(f"peer request refused: {refusal}")
                        + b"}",
                    )
                    await self._ws.close(1008, "refused")
                    return
                number = NUMBER.unpack(data[:8])[0]
                task = asyncio.create_task(self._take(number, data[8 + MAC_BYTES :]))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        finally:
            for task in self._tasks:
                task.cancel()

    def _check(self, data: bytes) -> str | None:
        """Why a frame is refused, or None."""
        if len(data) < 8 + MAC_BYTES:
            return "a frame too short for a batch"
        if len(data) - 8 - MAC_BYTES > self._sites.max_body:
            return f"a batch over {self._sites.max_body} bytes"
        number = data[:8]
        if not hmac.compare_digest(
            data[8 : 8 + MAC_BYTES], self._macs.batch(number, data[8 + MAC_BYTES :])
        ):
            return "the frame's signature does not match the pair's shared secret"
        value: int = NUMBER.unpack(number)[0]
        if value <= self._last:
            return f"frame {value} after {self._last}: a replay"
        self._last = value
        return None

    async def _take(self, number: int, body: bytes) -> None:
        try:
            # The pairing as it stands now (kept a second): one removed, re-keyed or in
            # conflict since the stream opened takes nothing more.
            record = await self._sites.peers.record(self._principal, self._site)
            if record is None or self._sites.peers.secret(self._principal, record) != self._secret:
                raise Unauthorized(
                    "peer request refused: the pairing changed since the stream opened"
                )
            check_sender(self._principal, record, self._site, self._path)
            replicated = await take_replicas(
                self._sites.platform, self._principal, self._site, body
            )
            status, answer = 200, _encode(replicated)
        except Exception as exc:
            error = answer_to(exc, "POST", self._path)
            status, answer = error.status, _encode(error.body())
        with contextlib.suppress(Exception):  # gone: the sender's bound answers for it
            await self._answer(number, status, answer)

    async def _answer(self, number: int, status: int, body: bytes) -> None:
        head = ANSWER_HEAD.pack(number, status)
        await self._ws.send_bytes(head + self._macs.answer(head, body) + body)

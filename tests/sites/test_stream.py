"""The kept peer stream of synchronous replication (`GET /v1/peers/{site}/stream`): two real
sites on loopback carry sync batches on it, and a client speaking the protocol by hand (aiohttp,
the pair's secret known to the test) checks what the receiving site refuses."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import signal
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from tests.polling import wait_until
from tests.sites.support import (
    SECRET,
    Site,
    pair,
    settle,
    start_site,
    sync_endpoint,
    two_sites,
)
from tests.sites.test_link import batch, counter

from stellwerk.sites import signed_headers

pytestmark = pytest.mark.slow

PATH = "/v1/peers/a/stream"


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, Site]]:
    with two_sites(Path(tmp_path_factory.mktemp("stream"))) as (a, b):
        pair(a, b)
        yield a, b


def test_sync_batches_go_on_the_kept_stream_and_each_event_is_on_the_peer_once(
    sites: tuple[Site, Site],
) -> None:
    a, b = sites
    sync_endpoint(a, "b")
    count = 20
    for n in range(count):
        assert a.send("default", batch(f"s{n}", 1)).status_code == 202
    metrics = httpx.get(f"{a.url}/metrics", timeout=10).text
    assert counter(metrics, "stellwerk_site_sync_events_total") == count
    assert counter(metrics, "stellwerk_site_sync_degraded_total") == 0
    requests = counter(metrics, "stellwerk_site_sync_requests_total")
    assert requests >= 1
    assert counter(metrics, "stellwerk_site_sync_streamed_total") == requests
    stored = b.events("default", 1000, until=f"s{count - 1}-0")
    ours = [e["id"] for e in stored if e["id"].startswith("s")]
    assert sorted(ours) == sorted(f"s{n}-0" for n in range(count))  # each once
    replica = next(e for e in stored if e["id"] == "s0-0")
    assert replica["originsite"] == "a"
    assert "originrecordedtime" in replica


def _headers(secret: str, path: str = PATH, site: str = "a") -> dict[str, str]:
    return signed_headers(
        secret,
        site=site,
        tenant="default",
        timestamp=int(time.time()),
        method="GET",
        path=path,
        body=b"",
    )


def _frame(nonce: bytes, number: int, body: bytes, secret: str = SECRET) -> bytes:
    head = struct.pack(">Q", number)
    mac = hmac.new(secret.encode(), b"q" + nonce + head + body, hashlib.sha256).digest()
    return head + mac + body


def _answer(nonce: bytes, data: bytes) -> tuple[int, int, Any]:
    head, mac, body = data[:10], data[10:42], data[42:]
    expected = hmac.new(SECRET.encode(), b"a" + nonce + head + body, hashlib.sha256).digest()
    assert hmac.compare_digest(mac, expected), "the answer is not signed with the pair's secret"
    number, status = struct.unpack(">QH", head)
    return number, status, json.loads(body)


def _event_body(event_id: str) -> bytes:
    event = {"specversion": "1.0", "id": event_id, "source": "urn:stream", "type": "t"}
    return json.dumps({"bus": "stream-bus", "events": [event]}).encode()


def test_the_stream_takes_signed_numbered_batches_and_refuses_replays_and_forgeries(
    sites: tuple[Site, Site],
) -> None:
    _, b = sites

    async def run() -> list[Any]:
        seen: list[Any] = []
        async with aiohttp.ClientSession() as session:
            headers = _headers(SECRET)
            async with session.ws_connect(b.url + PATH, headers=headers) as ws:
                hello = await ws.receive_bytes()
                nonce = hello[:16]
                # The peer proves it holds the secret: its hello is signed over our signature.
                signature = headers["stellwerk-signature"].encode()
                expected = hmac.new(
                    SECRET.encode(),
                    b"stellwerk-stream-hello\n" + nonce + signature,
                    hashlib.sha256,
                ).digest()
                seen.append(hmac.compare_digest(hello[16:], expected))
                # Two batches in flight at once, answered by number.
                await ws.send_bytes(_frame(nonce, 1, _event_body("hand-1")))
                await ws.send_bytes(_frame(nonce, 2, b'{"bus":"stream-bus"}'))
                answers = {}
                for _ in range(2):
                    number, status, body = _answer(nonce, await ws.receive_bytes())
                    answers[number] = (status, body)
                seen.append(answers)
                # The first frame again: a replay, refused, and the stream ends.
                await ws.send_bytes(_frame(nonce, 1, _event_body("hand-1")))
                seen.append(_answer(nonce, await ws.receive_bytes()))
                seen.append((await ws.receive()).type)
            # A frame signed with another secret is refused, and the stream ends.
            async with session.ws_connect(b.url + PATH, headers=_headers(SECRET)) as ws:
                fresh = (await ws.receive_bytes())[:16]
                forged = _frame(fresh, 1, _event_body("hand-2"), "another-secret-0123456")
                await ws.send_bytes(forged)
                seen.append(_answer(fresh, await ws.receive_bytes()))
                seen.append((await ws.receive()).type)
            # A frame made for the first stream (its nonce) does not verify on a new one.
            async with session.ws_connect(b.url + PATH, headers=_headers(SECRET)) as ws:
                fresh = (await ws.receive_bytes())[:16]
                await ws.send_bytes(_frame(nonce, 1, _event_body("hand-3")))
                seen.append(_answer(fresh, await ws.receive_bytes()))
        return seen

    hello, answers, replay, replay_end, forged, forged_end, stale = asyncio.run(run())
    assert hello is True
    assert answers[1] == (200, {"stored": 1})
    status, body = answers[2]
    assert status == 400
    assert "not a batch of replicated events" in body["message"]
    assert replay[:2] == (1, 401)
    assert "a replay" in replay[2]["message"]
    assert replay_end is aiohttp.WSMsgType.CLOSE
    assert forged[:2] == (1, 401)
    assert "signature does not match" in forged[2]["message"]
    assert forged_end is aiohttp.WSMsgType.CLOSE
    assert stale[:2] == (1, 401)
    assert [e["id"] for e in b.events("stream-bus", 10, until="hand-1")] == ["hand-1"]
    output = b.server.output()
    assert "peer request refused" in output
    assert SECRET not in output


@pytest.mark.parametrize(
    ("secret", "path", "status", "says"),
    [
        ("not-the-pair-secret-at-all", PATH, 401, "signature does not match"),
        (SECRET, "/v1/peers/c/stream", 401, "the path names another site"),
    ],
)
def test_an_upgrade_not_signed_right_is_refused_with_401_and_logged(
    sites: tuple[Site, Site], secret: str, path: str, status: int, says: str
) -> None:
    _, b = sites

    async def run() -> aiohttp.WSServerHandshakeError:
        async with aiohttp.ClientSession() as session:
            try:
                await session.ws_connect(b.url + path, headers=_headers(secret, path))
            except aiohttp.WSServerHandshakeError as exc:
                return exc
        raise AssertionError("the stream was opened")

    refused = asyncio.run(run())
    assert refused.status == status
    if status == 401 and "signature" in says:
        assert "peer request refused" in b.server.output()
        assert says in b.server.output()


class _OlderPeer(BaseHTTPRequestHandler):
    """A relay in front of b that answers its stream route as a version without it does (403,
    as uvicorn answers a WebSocket path the app does not have) and passes the rest on."""

    protocol_version = "HTTP/1.1"
    upstream = ""
    upgrades = 0

    def do_GET(self) -> None:
        if self.path.endswith("/stream"):
            type(self).upgrades += 1
            self._answer(403, b"")
            return
        self._relay()

    def do_POST(self) -> None:
        self._relay()

    def do_PUT(self) -> None:
        self._relay()

    def _relay(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length) if length else b""
        skip = {"host", "content-length", "connection", "transfer-encoding"}
        headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
        answer = httpx.request(
            self.command, self.upstream + self.path, content=body, headers=headers, timeout=30
        )
        self._answer(answer.status_code, answer.content)

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return None


def test_a_peer_without_the_stream_gets_the_sync_batches_as_http_requests(
    tmp_path: Path,
) -> None:
    with two_sites(tmp_path) as (a, b):

        class OlderB(_OlderPeer):
            upstream = b.url
            upgrades = 0

        handler = OlderB
        relay = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=relay.serve_forever, daemon=True)
        thread.start()
        try:
            body = {"url": f"http://127.0.0.1:{relay.server_address[1]}", "secret": SECRET}
            assert a.api("PUT", "/v1/peers/b", json=body).status_code == 201
            answer = b.api("PUT", "/v1/peers/a", json={"url": a.url, "secret": SECRET})
            assert answer.status_code == 201
            settle(a, b)
            sync_endpoint(a, "b")
            count = 5
            for n in range(count):
                assert a.send("default", batch(f"h{n}", 1)).status_code == 202
            metrics = httpx.get(f"{a.url}/metrics", timeout=10).text
            assert counter(metrics, "stellwerk_site_sync_events_total") == count
            assert counter(metrics, "stellwerk_site_sync_degraded_total") == 0
            assert counter(metrics, "stellwerk_site_sync_requests_total") >= 1
            assert counter(metrics, "stellwerk_site_sync_streamed_total") == 0
            # Asked once; the rest went straight to HTTP for the while.
            assert handler.upgrades == 1
            stored = b.events("default", 1000, until=f"h{count - 1}-0")
            ours = [e["id"] for e in stored if e["id"].startswith("h")]
            assert sorted(ours) == sorted(f"h{n}-0" for n in range(count))
        finally:
            relay.shutdown()
            relay.server_close()
            thread.join()


def test_a_hung_peer_degrades_sync_to_async_within_the_bound_and_the_stream_comes_back(
    tmp_path: Path,
) -> None:
    with two_sites(tmp_path) as (a, b):
        pair(a, b)
        sync_endpoint(a, "b", timeout_ms=1000)
        for n in range(3):
            assert a.send("default", batch(f"up{n}", 1)).status_code == 202

        def sync_metrics() -> tuple[float, float]:
            text = httpx.get(f"{a.url}/metrics", timeout=10).text
            return (
                counter(text, "stellwerk_site_sync_events_total"),
                counter(text, "stellwerk_site_sync_degraded_total"),
            )

        assert sync_metrics() == (3, 0)
        b.server.terminate(signal.SIGSTOP)  # hung: the stream's connection stays open
        try:
            began = time.monotonic()
            assert a.send("default", batch("hung", 1)).status_code == 202
            print(f"\nanswered {time.monotonic() - began:.2f} s after the peer hung (bound 1 s)")
            assert sync_metrics() == (3, 1)
            assert "synchronous replication degraded to async" in a.server.output()
        finally:
            b.server.terminate(signal.SIGCONT)
        # b back: after the degraded spell a request waits for b again, on a new stream.
        wait_until(
            lambda: (a.send("default", batch(f"back{time.monotonic_ns()}", 1)), sync_metrics())[1],
            what="a request acknowledged by b again",
            accept=lambda m: m[0] > 3,
        )
        stored = {e["id"] for e in b.events("default", 1000, until="hung-0")}
        assert {"up0-0", "up1-0", "up2-0", "hung-0"} <= stored


def test_a_batch_stuck_behind_a_hung_peers_full_socket_buffer_is_given_up_within_the_bound(
    tmp_path: Path,
) -> None:
    """A stopped peer reads nothing: a batch larger than the sockets' buffers stays in the
    sender's buffer, and writing it waits for the peer. That wait is under the batch's bound as
    the answer is: the batch is given up and the bus's next batch goes out (on a new stream),
    instead of every later batch of the bus waiting behind it until the peer reads again."""
    with ExitStack() as stack:
        # Room for one request larger than loopback's socket buffers (4 MiB each way at most
        # for a sender, and the stopped peer's receive buffer does not grow).
        a = start_site(stack, tmp_path, "a", "--max-body-bytes", str(64 << 20), ready=False)
        b = start_site(stack, tmp_path, "b", ready=False)
        a.ready()
        b.ready()
        pair(a, b)
        sync_endpoint(a, "b", timeout_ms=1000)
        assert a.send("default", batch("up", 1)).status_code == 202  # the stream is open

        def requests() -> float:
            text = httpx.get(f"{a.url}/metrics", timeout=10).text
            return counter(text, "stellwerk_site_sync_requests_total")

        def acknowledged() -> float:
            text = httpx.get(f"{a.url}/metrics", timeout=10).text
            return counter(text, "stellwerk_site_sync_events_total")

        b.server.terminate(signal.SIGSTOP)
        try:
            big = [{**e, "data": "x" * 250_000} for e in batch("big", 64)]  # 16 MB
            assert a.send("default", big).status_code == 202
            sent = requests()
            # Another request once the degraded spell is over goes out only if the big
            # batch's send ended: one batch of a bus is out at a time.
            wait_until(
                lambda: (a.send("default", batch(f"n{time.monotonic_ns()}", 1)), requests())[1],
                what="the bus's next batch sent to the hung peer",
                accept=lambda n: n > sent,
                within=60,
            )
        finally:
            b.server.terminate(signal.SIGCONT)
        # b back: a request is acknowledged by b again.
        wait_until(
            lambda: (a.send("default", batch(f"back{time.monotonic_ns()}", 1)), acknowledged())[1],
            what="a request acknowledged by b again",
            accept=lambda n: n > 1,
        )

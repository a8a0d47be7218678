"""Ingest requests built ahead of time: only the event ids change from one request to the next.

Every event gets a unique id of fixed width (`<run>-<worker>-<counter>`), so the body length, and
with it the whole request head, is known before the run starts: making a request is one
`bytes.join` of prebuilt parts. Unique ids keep the server's idempotency check honest: repeated ids
would be answered as duplicates without being written.
"""

from __future__ import annotations

import secrets
from enum import StrEnum
from typing import Final
from urllib.parse import urlsplit

import msgspec

STRUCTURED: Final = "application/cloudevents+json"
BATCH: Final = "application/cloudevents-batch+json"
_ID_MARK: Final = "@@EVENT-ID@@"
_COUNTER_DIGITS: Final = 12


class Mode(StrEnum):
    SINGLE = "single"  # one event per request, structured mode
    BATCH = "batch"  # an array of events per request, batch mode


class Target(msgspec.Struct, frozen=True):
    """Where the load goes: `url` is the server's base URL (`http://host:port`)."""

    url: str
    key: str
    bus: str = "default"

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        if parts.scheme != "http":
            raise ValueError(f"only http:// targets are supported, not {self.url!r}")
        return parts.port or 80

    @property
    def path(self) -> str:
        return urlsplit(self.url).path.rstrip("/") + f"/v1/buses/{self.bus}/events"


def new_run_id() -> str:
    return secrets.token_hex(4)


def event_template(data_bytes: int) -> str:
    """One CloudEvent as compact JSON with `_ID_MARK` where the id goes; `data` is padded so the
    event carries about `data_bytes` bytes of payload."""
    event = {
        "specversion": "1.0",
        "id": _ID_MARK,
        "source": "https://bench.stellwerk.example/loadgen",
        "type": "com.example.bench.order.created",
        "time": "2025-01-01T12:00:00Z",
        "subject": "orders/42",
        "datacontenttype": "application/json",
        "data": {"orderId": "ord-42", "total": 99.5, "pad": "x" * max(0, data_bytes - 40)},
    }
    return msgspec.json.encode(event).decode()


class RequestFactory:
    """Makes complete HTTP/1.1 requests, each with fresh event ids.

    `worker` (0-99) tells the processes of one run apart; `run` tells runs apart.
    """

    def __init__(
        self,
        target: Target,
        mode: Mode,
        *,
        batch_size: int = 100,
        data_bytes: int = 512,
        run: str | None = None,
        worker: int = 0,
    ) -> None:
        if not 0 <= worker < 100:
            raise ValueError("worker must be within 0..99")
        self.mode = mode
        self.events_per_request = batch_size if mode is Mode.BATCH else 1
        if self.events_per_request < 1:
            raise ValueError("batch size must be at least 1")
        self._prefix = f"{run or new_run_id()}-{worker:02d}-"
        self._counter = 0
        template = event_template(data_bytes)
        before, after = template.split(_ID_MARK)
        if mode is Mode.BATCH:
            # The parts between ids: `[` + before, then after + `,` + before, ..., after + `]`.
            self._parts = ["[" + before] + [after + "," + before] * (batch_size - 1) + [after + "]"]
        else:
            self._parts = [before, after]
        self._encoded_parts = [p.encode() for p in self._parts]
        id_width = len(self._prefix) + _COUNTER_DIGITS
        body_length = sum(len(p) for p in self._encoded_parts) + id_width * self.events_per_request
        self.head = (
            f"POST {target.path} HTTP/1.1\r\n"
            f"Host: {target.host}:{target.port}\r\n"
            f"Authorization: Bearer {target.key}\r\n"
            f"Content-Type: {BATCH if mode is Mode.BATCH else STRUCTURED}\r\n"
            f"Content-Length: {body_length}\r\n\r\n"
        ).encode()
        self.body_length = body_length

    def next_ids(self) -> list[str]:
        start = self._counter
        self._counter += self.events_per_request
        prefix = self._prefix
        return [f"{prefix}{n:012d}" for n in range(start, self._counter)]

    def body(self, ids: list[str]) -> bytes:
        parts = self._encoded_parts
        pieces = [parts[0]]
        for index, event_id in enumerate(ids, 1):
            pieces.append(event_id.encode())
            pieces.append(parts[index])
        return b"".join(pieces)

    def next_request(self) -> bytes:
        """The next request, head and body, with ids not used before by this factory."""
        return self.head + self.body(self.next_ids())

"""Local stand-ins for the services Stellwerk reports to: Sentry's envelope endpoint and an
OpenTelemetry collector's OTLP/HTTP traces endpoint, on loopback, keeping what they received."""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from tests.polling import serve_in_thread, wait_until

T = TypeVar("T")


class Received:
    """What a receiver got: raw bodies (decompressed) by path, in order."""

    def __init__(self) -> None:
        self.bodies: list[tuple[str, dict[str, str], bytes]] = []
        self._lock = threading.Lock()

    def add(self, path: str, headers: dict[str, str], body: bytes) -> None:
        with self._lock:
            self.bodies.append((path, headers, body))

    def snapshot(self) -> list[tuple[str, dict[str, str], bytes]]:
        with self._lock:
            return list(self.bodies)

    def wait_for(self, found: Callable[[], T | None], within: float = 30) -> T:
        try:
            result = wait_until(found, what="an arrival", within=within)
        except AssertionError as late:
            raise AssertionError(f"{late}; received {self.snapshot()!r:.2000}") from None
        assert result is not None
        return result


def _handler(received: Received) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if self.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            received.add(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            answer = b"{}"
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def receiver() -> Iterator[tuple[str, Received]]:
    """An HTTP receiver on a free loopback port: (its base URL, what it received)."""
    received = Received()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(received))
    thread = serve_in_thread(server)
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def envelope_items(body: bytes) -> list[tuple[dict[str, Any], bytes]]:
    """(item header, payload) of each item of a Sentry envelope (its first line is its header)."""
    lines = body.split(b"\n", 1)
    rest = lines[1] if len(lines) > 1 else b""
    items = []
    while rest.strip():
        header_line, _, rest = rest.partition(b"\n")
        header = json.loads(header_line)
        if "length" in header:
            payload, rest = rest[: header["length"]], rest[header["length"] :]
            rest = rest.removeprefix(b"\n")
        else:
            payload, _, rest = rest.partition(b"\n")
        items.append((header, payload))
    return items


def sentry_events(received: Received) -> list[dict[str, Any]]:
    events = []
    for path, _, body in received.snapshot():
        if path.endswith("/envelope/"):
            for header, payload in envelope_items(body):
                if header.get("type") == "event":
                    events.append(json.loads(payload))
    return events


def spans(received: Received) -> list[Any]:
    """Every span of every OTLP export received, with its resource's attributes attached."""
    found = []
    for path, _, body in received.snapshot():
        if path == "/v1/traces":
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    found.extend(scope_spans.spans)
    return found


def attributes(span: Any) -> dict[str, Any]:
    values = {}
    for attribute in span.attributes:
        value = attribute.value
        kind = value.WhichOneof("value")
        if kind == "array_value":
            values[attribute.key] = [v.string_value for v in value.array_value.values]
        else:
            values[attribute.key] = getattr(value, kind)
    return values

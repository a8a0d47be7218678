"""A receiver for tests that drive real server processes: an HTTP server in a thread of the test
that counts the event ids it is sent (CloudEvents JSON bodies) and answers 204."""

from __future__ import annotations

import contextlib
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.conftest import free_port
from tests.polling import serve_in_thread


class Received:
    """Event ids as they arrive (how often each), and the `replayname` each carried."""

    def __init__(self) -> None:
        self.ids: Counter[str] = Counter()
        self.replay_names: set[object] = set()
        self.lock = threading.Condition()

    def add(self, event: dict[str, object]) -> None:
        with self.lock:
            self.ids[str(event["id"])] += 1
            self.replay_names.add(event.get("replayname"))
            self.lock.notify_all()

    def wait_for(self, predicate: Callable[[Received], bool], seconds: float) -> bool:
        with self.lock:
            return self.lock.wait_for(lambda: predicate(self), seconds)


def start_receiver(
    received: Received, answer: Callable[[], int] | None = None
) -> ThreadingHTTPServer:
    """`answer()` says the status of each request (default 204); only 2xx count as received."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            status = answer() if answer is not None else 204
            if 200 <= status < 300:
                received.add(json.loads(body))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    serve_in_thread(server)
    return server


@contextlib.contextmanager
def running_receiver(answer: Callable[[], int] | None = None) -> Iterator[tuple[Received, str]]:
    """A started receiver and the URL to send to; shut down after."""
    received = Received()
    server = start_receiver(received, answer)
    try:
        yield received, f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()

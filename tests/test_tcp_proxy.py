"""The tests' TCP relay (tests/tcp_proxy.py) ends every connection it relays when it closes: a
relay left pending in its stopped loop is "Task was destroyed but it is pending" at exit."""

from __future__ import annotations

import asyncio
import gc
import socket

import pytest
from tests.polling import wait_until
from tests.tcp_proxy import TcpProxy


def test_closing_ends_the_relays_even_one_holding_back_a_chunk(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as upstream:
        with TcpProxy(upstream.getsockname()[1]) as proxy:
            client = socket.create_connection(("127.0.0.1", proxy.port))
            server, _ = upstream.accept()  # the proxy's own connection
            with client, server:
                client.sendall(b"through")
                assert server.recv(16) == b"through"
                proxy.delay = 60  # a server that hangs: the next chunk is held back
                server.sendall(b"held")
                wait_until(lambda: proxy.held == 1, what="the chunk held back")
        assert not [t for t in asyncio.all_tasks(proxy._loop) if not t.done()]
    gc.collect()  # a pending task says so as it is collected
    assert "Task was destroyed" not in caplog.text

"""`import stellwerk` stays cheap: the client is imported when first named, and aiohttp only
for `AsyncClient`; the client needs nothing of the server (tests/test_layers.py holds that)."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
import stellwerk
assert "stellwerk.client" not in sys.modules, "import stellwerk imported the client"
client = stellwerk.Client("http://127.0.0.1:1", key="k")
assert "aiohttp" not in sys.modules, "Client imported aiohttp"
server = [m for m in ("stellwerk.app", "starlette", "sqlalchemy") if m in sys.modules]
assert not server, f"Client imported the server's modules: {server}"
assert stellwerk.AsyncClient.__name__ == "AsyncClient"
assert "aiohttp" in sys.modules
"""


def test_the_client_is_imported_on_first_use_and_aiohttp_only_for_async() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr

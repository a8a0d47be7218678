"""Stellwerk: a self-hosted event platform that sets the routes events take.

`stellwerk.Client`, `stellwerk.AsyncClient` and `stellwerk.StellwerkError` are the Python
client's (`stellwerk.client`), imported on first use so that `import stellwerk` stays cheap
for the server's processes and the command line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stellwerk.version import __version__

if TYPE_CHECKING:
    from stellwerk.client import AsyncClient, Client, SendError, StellwerkError

__all__ = ["AsyncClient", "Client", "SendError", "StellwerkError", "__version__"]

_CLIENT_NAMES = frozenset({"AsyncClient", "Client", "SendError", "StellwerkError"})


def __getattr__(name: str) -> Any:
    if name in _CLIENT_NAMES:
        from stellwerk import client

        return getattr(client, name)
    raise AttributeError(f"module 'stellwerk' has no attribute {name!r}")

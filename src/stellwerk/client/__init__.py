"""Stellwerk's Python client: `Client` (sync) and `AsyncClient` over the native HTTP API.

Imports nothing of the server, so that producers pay only for msgspec (and aiohttp when they
use `AsyncClient`, which is imported on first use). See docs/client.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stellwerk.client._errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    SendError,
    ServerError,
    ServiceUnavailable,
    StellwerkError,
    TooManyRequests,
    Unauthorized,
    Unreachable,
    UnsupportedMediaType,
    ValidationFailed,
)
from stellwerk.client._exchange import Retries
from stellwerk.client._models import (
    Archive,
    Bus,
    EndpointLag,
    EndpointState,
    EndpointTransition,
    EventFailure,
    InputTransformer,
    Problem,
    Replay,
    RetryPolicy,
    Rule,
    SendResult,
    Target,
)
from stellwerk.client._sync import Client

if TYPE_CHECKING:
    from stellwerk.client._async import AsyncClient

__all__ = [
    "Archive",
    "AsyncClient",
    "BadRequest",
    "Bus",
    "Client",
    "Conflict",
    "EndpointLag",
    "EndpointState",
    "EndpointTransition",
    "EventFailure",
    "Forbidden",
    "InputTransformer",
    "NotFound",
    "PayloadTooLarge",
    "Problem",
    "Replay",
    "Retries",
    "RetryPolicy",
    "Rule",
    "SendError",
    "SendResult",
    "ServerError",
    "ServiceUnavailable",
    "StellwerkError",
    "Target",
    "TooManyRequests",
    "Unauthorized",
    "Unreachable",
    "UnsupportedMediaType",
    "ValidationFailed",
]


def __getattr__(name: str) -> Any:
    if name == "AsyncClient":
        from stellwerk.client._async import AsyncClient

        return AsyncClient
    raise AttributeError(f"module 'stellwerk.client' has no attribute {name!r}")

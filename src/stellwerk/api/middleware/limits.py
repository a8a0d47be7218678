"""Request body limit: 413 as soon as the declared or received size passes the bound.

A declared `Content-Length` over the limit is refused before any of the body is read; a chunked
body is counted as it arrives and refused at the first chunk that crosses the bound. The ingest
fast path uses the same checks (`check_length`, `too_large`).
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stellwerk.api.errors import ApiError


def too_large(limit: int) -> ApiError:
    return ApiError(
        413, "PayloadTooLarge", f"the request body is larger than {limit} bytes", limit=limit
    )


def check_length(value: bytes, limit: int) -> None:
    """Refuse a `Content-Length` that is not a number within `limit`."""
    try:
        declared = int(value)
    except ValueError:
        declared = -1
    if declared < 0:
        raise ApiError(400, "InvalidRequest", "Content-Length is not a number")
    if declared > limit:
        raise too_large(limit)


def check_declared(headers: Iterable[tuple[bytes, bytes]], limit: int) -> None:
    """Refuse a request whose every `Content-Length` is not a number within `limit`."""
    for name, value in headers:
        if name == b"content-length":
            check_length(value, limit)


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.limit = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            check_declared(scope["headers"], self.limit)
        except ApiError as error:
            await error.response()(scope, receive, send)
            return
        received = 0

        async def receive_counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise too_large(self.limit)
            return message

        await self.app(scope, receive_counted, send)

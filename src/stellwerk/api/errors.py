"""The error body every failing request gets, and the outermost middleware that guarantees it.

Errors are `{"error": "<Code>", "message": "...", ...}`. The service layer refuses with a
`ServiceError`, which `api_error` maps to its status; the API's own code raises `ApiError`;
whatever else escapes becomes a 500 `InternalError` whose body never carries a traceback (the log
does), or a 503 when it says a store is out of reach, which a client retries.
"""

from __future__ import annotations

from typing import Any

import msgspec
import structlog
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stellwerk.service import (
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    NotSupported,
    PayloadTooLarge,
    ServiceError,
    TooManyRequests,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
    ValidationFailed,
)

log = structlog.get_logger("stellwerk.api")

_encode = msgspec.json.Encoder().encode


class ErrorBody(msgspec.Struct, omit_defaults=True):
    """The JSON body of every error response."""

    error: str
    message: str
    field: str | None = None


class ApiError(Exception):
    """An error that answers the request with `status` and a machine-readable `error` code."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.headers = headers or {}
        self.extra = {k: v for k, v in extra.items() if v is not None}

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "message": self.message, **self.extra}

    def response(self) -> Response:
        return Response(
            _encode(self.body()),
            status_code=self.status,
            headers=self.headers,
            media_type="application/json",
        )


# Status codes Starlette raises itself (routing, methods), with the codes Stellwerk answers.
_HTTP_CODES = {
    400: "InvalidRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
    422: "ValidationFailed",
    429: "TooManyRequests",
    501: "NotImplemented",
    503: "ServiceUnavailable",
}


_SERVICE_STATUS: dict[type[ServiceError], int] = {
    InvalidRequest: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    ValidationFailed: 422,
    TooManyRequests: 429,
    NotSupported: 501,
    Unavailable: 503,
}


def api_error(exc: ServiceError) -> ApiError:
    """The HTTP answer to a refusal of the service layer."""
    status = next((_SERVICE_STATUS[c] for c in type(exc).__mro__ if c in _SERVICE_STATUS), 400)
    headers = {}
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    if exc.retry_after_seconds is not None:
        headers["Retry-After"] = str(exc.retry_after_seconds)
    return ApiError(status, exc.code, exc.message, headers=headers, field=exc.field, **exc.extra)


def answer_to(exc: Exception, method: object, path: object) -> ApiError:
    """The error answer to any exception a request raised (logged when it is a fault)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ServiceError):
        return api_error(exc)
    return unhandled(exc, method, path)


async def handle_api_error(request: Request, exc: Exception) -> Response:
    return answer_to(exc, request.method, request.url.path).response()


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "HTTPError")
    if exc.status_code == 404:
        message = f"no resource at {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    return ApiError(exc.status_code, code, message, headers=dict(exc.headers or {})).response()


def out_of_reach(exc: Exception) -> bool:
    """Whether `exc` says a store could not be reached (a refused or broken connection, a
    timeout), which passes without a restart, rather than a fault in this process."""
    if isinstance(exc, OSError | sa_exc.TimeoutError):  # TimeoutError is an OSError
        return True
    return isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated


def unhandled(exc: Exception, method: object, path: object) -> ApiError:
    """The answer to an exception no code turned into an `ApiError`, logged: 503 with
    `Retry-After` while a store is out of reach (the control plane's PostgreSQL, say), else 500."""
    if out_of_reach(exc):
        log.warning("store out of reach", method=method, path=path, error=repr(exc))
        return ApiError(
            503, "ServiceUnavailable", "a store is out of reach", headers={"Retry-After": "1"}
        )
    log.error("request failed", method=method, path=path, exc_info=exc)
    return ApiError(500, "InternalError", "the server failed to handle the request")


class ErrorMiddleware:
    """Outermost layer: an exception becomes a log line and, if nothing was sent yet, a JSON 500
    (or 503, see `unhandled`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_tracking)
        except Exception as exc:
            # Raised outside routing (e.g. by a middleware while reading the body), or a fault.
            error = answer_to(exc, scope.get("method"), scope.get("path"))
            if not started:
                await error.response()(scope, receive, send)

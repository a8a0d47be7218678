"""The client's one exception tree: an HTTP status, or no answer at all, maps onto a class.

Every error carries the server's `error` code, `message` and `field` (the JSON error body every
Stellwerk answer has), and the HTTP `status` (None when no endpoint answered), so a caller can
branch on a class or on a code, whichever reads better.
"""

from __future__ import annotations

from typing import Any

import msgspec

from stellwerk.client._models import EventFailure


class StellwerkError(Exception):
    """Something the server refused, or no endpoint answered; see the subclasses."""

    def __init__(
        self,
        message: str,
        *,
        error: str = "Error",
        status: int | None = None,
        field: str | None = None,
        retry_after: float | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error = error
        self.status = status
        self.field = field
        self.retry_after = retry_after
        self.body: dict[str, Any] = body or {}

    def __str__(self) -> str:
        where = f" (field {self.field})" if self.field else ""
        status = f"{self.status} " if self.status is not None else ""
        return f"{status}{self.error}: {self.message}{where}"


class BadRequest(StellwerkError):
    """400: the request is wrong (a bad name, a pattern the server cannot use, ...)."""


class Unauthorized(StellwerkError):
    """401: no key, or a key the server does not know."""


class Forbidden(StellwerkError):
    """403: the key's scope does not allow this (an ingest key managing rules, say)."""


class NotFound(StellwerkError):
    """404: no such bus, rule or replay in the key's tenant."""


class Conflict(StellwerkError):
    """409: a name taken for good (replays), a limit reached, a state that forbids the change."""


class PayloadTooLarge(StellwerkError):
    """413: a body or batch above the server's limits (`send` splits batches by itself)."""


class UnsupportedMediaType(StellwerkError):
    """415: the server does not take this content type."""


class ValidationFailed(StellwerkError):
    """422: a field of the wrong type, a missing or an unknown field."""


class TooManyRequests(StellwerkError):
    """429: the tenant's request or event rate is spent; `retry_after` says for how long."""


class ServerError(StellwerkError):
    """5xx: the server failed; retried, and failed over when there are several endpoints."""


class ServiceUnavailable(ServerError):
    """503: starting, a store out of reach, or the log overloaded (`retry_after`)."""


class Unreachable(StellwerkError):
    """No endpoint answered: refused connections, timeouts, broken connections."""


class SendError(StellwerkError):
    """`send` could not get every event acknowledged.

    `failures`: the events the server refused, each with its reason (retrying them will not
    help). `acknowledged`: the ids of events that are durable. `unsent`: events (with the ids
    the client gave them) that were neither acknowledged nor refused, because a whole request
    failed (the cause is `__cause__`); sending them again is safe, the server drops duplicates.
    """

    def __init__(
        self,
        message: str,
        *,
        failures: list[EventFailure],
        acknowledged: list[str],
        unsent: list[dict[str, Any]],
        error: str,
        status: int | None,
        field: str | None = None,
    ) -> None:
        super().__init__(message, error=error, status=status, field=field)
        self.failures = failures
        self.acknowledged = acknowledged
        self.unsent = unsent


_BY_STATUS: dict[int, type[StellwerkError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: ValidationFailed,
    429: TooManyRequests,
    503: ServiceUnavailable,
}


class _ErrorBody(msgspec.Struct):
    error: str = "Error"
    message: str = ""
    field: str | None = None


def error_from_answer(status: int, body: bytes, retry_after: float | None = None) -> StellwerkError:
    """The exception for an error answer; a body that is not Stellwerk's JSON (a proxy's HTML
    page, say) still gives the status and the start of the text."""
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else StellwerkError)
    try:
        raw = msgspec.json.decode(body)
        parsed = msgspec.convert(raw, _ErrorBody)
    except (msgspec.DecodeError, msgspec.ValidationError):
        text = body[:200].decode("utf-8", "replace").strip() or "(no body)"
        return cls(text, error=f"HTTP{status}", status=status, retry_after=retry_after)
    return cls(
        parsed.message or f"HTTP {status}",
        error=parsed.error,
        status=status,
        field=parsed.field,
        retry_after=retry_after,
        body=raw if isinstance(raw, dict) else None,
    )

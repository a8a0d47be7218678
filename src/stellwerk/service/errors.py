"""What the service layer refuses, as a small tree of domain errors.

Each class is a decision a caller can act on (fix the input, look elsewhere, wait and retry);
`stellwerk.api` maps each to its HTTP status, the command line to a one-line error. `code` is the
machine-readable reason the API shows (`"InvalidEventPatternException"`, `"LimitExceeded"`),
`field` the input that is wrong, `extra` anything else the answer carries.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from stellwerk.seams import LogOverloaded, LogUnavailable


class ServiceError(Exception):
    default_code: ClassVar[str] = "InvalidRequest"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        field: str | None = None,
        retry_after: float | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.field = field
        self.retry_after = retry_after
        self.extra = {k: v for k, v in extra.items() if v is not None}

    @property
    def retry_after_seconds(self) -> int | None:
        """Whole seconds to wait before trying again (at least 1), if waiting helps."""
        return None if self.retry_after is None else max(1, math.ceil(self.retry_after))


class InvalidRequest(ServiceError):
    """The input is wrong; `field` says where."""


class ValidationFailed(ServiceError):
    """The input is well-formed but breaks a rule about its values (a length, a choice)."""

    default_code = "ValidationFailed"


class NotFound(ServiceError):
    default_code = "NotFound"

    @classmethod
    def of(cls, what: str) -> NotFound:
        return cls(f"{what} does not exist")


class Conflict(ServiceError):
    """The request contradicts what is stored: a limit reached, a name taken, a finished state."""

    default_code = "Conflict"


class Unauthorized(ServiceError):
    """No valid API key."""

    default_code = "Unauthorized"


class Forbidden(ServiceError):
    """A valid key whose scope does not allow the request."""

    default_code = "Forbidden"


class TooManyRequests(ServiceError):
    """A rate limit is spent; `retry_after` says when it is not."""

    default_code = "TooManyRequests"


class RequestRateSpent(TooManyRequests):
    """The tenant's request rate is spent: the request is refused as a whole (an event-rate
    refusal may be one bus's share of a request that names several, as PutEvents' may)."""


class PayloadTooLarge(ServiceError):
    default_code = "PayloadTooLarge"


class UnsupportedMediaType(ServiceError):
    default_code = "UnsupportedMediaType"


class NotSupported(ServiceError):
    """This deployment cannot do it (its stores lack the feature); no retry will help."""

    default_code = "NotImplemented"


class Unavailable(ServiceError):
    """A store cannot take the request now (overloaded, starting); `retry_after` says when."""

    default_code = "ServiceUnavailable"


def log_refused(exc: LogOverloaded, context: str) -> Unavailable:
    """The refusal of an append the log could not take: its storage's reason and code when the
    disk is why (`LogUnavailable`), else `context` with the log's words."""
    if isinstance(exc, LogUnavailable):
        return Unavailable(str(exc), code=exc.code, retry_after=exc.retry_after)
    return Unavailable(f"{context}: {exc}", retry_after=exc.retry_after)

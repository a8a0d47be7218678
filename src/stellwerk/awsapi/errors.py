"""Errors as the AWS JSON 1.1 protocol carries them: HTTP 400 (or 5xx) with
`{"__type": <code>, "message": ...}`, which the SDKs raise as their typed exceptions
(`client.exceptions.ResourceNotFoundException`, ...)."""

from __future__ import annotations

from stellwerk.service import (
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    ServiceError,
    TooManyRequests,
    Unauthorized,
    Unavailable,
    ValidationFailed,
)


class AwsError(Exception):
    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def validation(message: str) -> AwsError:
    return AwsError("ValidationException", message)


def not_found(message: str) -> AwsError:
    return AwsError("ResourceNotFoundException", message)


def from_service(error: ServiceError) -> AwsError:
    """The EventBridge error for what a facade refused."""
    message = error.message
    match error:
        case NotFound():
            return not_found(message)
        case Conflict() if error.code == "LimitExceeded":
            return AwsError("LimitExceededException", message)
        case Conflict():
            return AwsError("ConcurrentModificationException", message)
        case ValidationFailed() | InvalidRequest() | PayloadTooLarge():
            return validation(message)
        case Unauthorized():
            return AwsError("UnrecognizedClientException", message)
        case Forbidden():
            return AwsError("AccessDeniedException", message)
        case TooManyRequests():
            return AwsError("ThrottlingException", message)
        case Unavailable():
            return AwsError("InternalException", message, 503)
    return AwsError("InternalException", message, 500)

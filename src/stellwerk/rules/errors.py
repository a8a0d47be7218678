"""Save-time errors of targets and connections, each naming the field at fault.

These are raised when a rule or connection is saved (or a target is built), so the API can answer
400 with the field and the reason. At delivery time nothing here is raised: targets map every
problem onto an outcome (`RetryLater` or `GiveUp`) instead.
"""

from __future__ import annotations


class TargetConfigError(ValueError):
    """A target or connection setting Stellwerk cannot deliver with; `field` says which one."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class InvalidTargetError(TargetConfigError):
    """A target's own setting is wrong: its URL, secret, function, timeout, concurrency..."""


class UnsafeTargetError(InvalidTargetError):
    """The target URL points where outgoing requests may not go (the SSRF guard refused it)."""

    def __init__(self, reason: str, field: str = "url") -> None:
        super().__init__(field, reason)


class InvalidConnectionError(TargetConfigError):
    """A connection spec is wrong: unknown type, missing or malformed credential fields."""

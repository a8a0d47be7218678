"""The error raised when a rule is saved with an input transformer EventBridge would reject."""

from __future__ import annotations


class InvalidTransformerError(ValueError):
    def __init__(self, reason: str, field: str | None = None) -> None:
        self.reason = reason
        self.field = field
        super().__init__(reason)

"""The one error the pattern language raises: a pattern EventBridge would reject."""

from __future__ import annotations


class InvalidPatternError(ValueError):
    """A pattern that EventBridge would reject, with the reason and the field it concerns.

    The HTTP API turns it into ``InvalidEventPatternException``; ``str(error)`` reads like
    EventBridge's own message ("Event pattern is not valid. Reason: ...").
    """

    def __init__(self, reason: str, field: str | None = None) -> None:
        self.reason = reason
        self.field = field
        where = f" (field {field!r})" if field else ""
        super().__init__(f"Event pattern is not valid. Reason: {reason}{where}")

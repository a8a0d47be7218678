"""Why one event was refused: a machine-readable code, the attribute at fault and a message."""

from __future__ import annotations

from enum import StrEnum


class EventErrorCode(StrEnum):
    """The reasons an event can be refused; the values travel in API answers as `error`."""

    NOT_AN_OBJECT = "NotAnObject"
    MISSING_ATTRIBUTE = "MissingAttribute"
    INVALID_ATTRIBUTE = "InvalidAttribute"
    INVALID_EXTENSION = "InvalidExtension"
    INVALID_DATA = "InvalidData"
    EVENT_TOO_LARGE = "EventTooLarge"


class EventError(ValueError):
    """One event broke the CloudEvents 1.0 rules or a Stellwerk limit.

    `attribute` names the attribute at fault (`None` when the event as a whole is wrong), and the
    message always names it too, so a person reading only the message knows what to fix.
    """

    def __init__(self, code: EventErrorCode, attribute: str | None, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.attribute = attribute
        self.message = message

    def __repr__(self) -> str:
        return f"EventError({self.code.value}, {self.attribute!r}, {self.message!r})"

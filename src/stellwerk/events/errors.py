"""Why one event was refused: a machine-readable code, the attribute at fault and a message."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import NamedTuple


class EventErrorCode(StrEnum):
    """The reasons an event can be refused; the values travel in API answers as `error`."""

    NOT_AN_OBJECT = "NotAnObject"
    MISSING_ATTRIBUTE = "MissingAttribute"
    INVALID_ATTRIBUTE = "InvalidAttribute"
    INVALID_EXTENSION = "InvalidExtension"
    INVALID_DATA = "InvalidData"
    EVENT_TOO_LARGE = "EventTooLarge"


class EventProblem(NamedTuple):
    """One thing wrong with an event: the code, the attribute at fault (None: the whole event)
    and a message that names the attribute."""

    code: EventErrorCode
    attribute: str | None
    message: str


class EventError(ValueError):
    """One event broke the CloudEvents 1.0 rules or a Stellwerk limit.

    `problems` lists everything found wrong with the event at once, so a producer fixes them in
    one go; `code`, `attribute` and `message` are the first one's (the message lists them all),
    and the message always names the attribute too, so a person reading only the message knows
    what to fix.
    """

    def __init__(
        self,
        code: EventErrorCode,
        attribute: str | None,
        message: str,
        *,
        problems: Sequence[EventProblem] = (),
    ) -> None:
        super().__init__(message)
        self.code = code
        self.attribute = attribute
        self.message = message
        self.problems = tuple(problems) or (EventProblem(code, attribute, message),)

    @classmethod
    def of(cls, problems: Sequence[EventProblem]) -> EventError:
        """The error for every problem found, first one first."""
        first = problems[0]
        message = "; ".join(problem.message for problem in problems)
        return cls(first.code, first.attribute, message, problems=problems)

    def __repr__(self) -> str:
        return f"EventError({self.code.value}, {self.attribute!r}, {self.message!r})"

"""The event model: CloudEvents 1.0 envelopes, their validation and encoding (pure, no I/O)."""

from stellwerk.events.errors import EventError, EventErrorCode, EventProblem
from stellwerk.events.model import (
    OWNED_EXTENSIONS,
    REPLAY_NAME,
    SPECVERSION,
    CloudEvent,
    ExtensionValue,
    encode_event,
)
from stellwerk.events.rfc3339 import (
    Rfc3339,
    all_rfc3339,
    format_rfc3339,
    is_rfc3339,
    parse_rfc3339,
)
from stellwerk.events.validate import (
    CLOUD_EVENT_SCHEMA,
    MAX_EVENT_SIZE,
    check_event_size,
    validate_event,
)

__all__ = [
    "CLOUD_EVENT_SCHEMA",
    "MAX_EVENT_SIZE",
    "OWNED_EXTENSIONS",
    "REPLAY_NAME",
    "SPECVERSION",
    "CloudEvent",
    "EventError",
    "EventErrorCode",
    "EventProblem",
    "ExtensionValue",
    "Rfc3339",
    "all_rfc3339",
    "check_event_size",
    "encode_event",
    "format_rfc3339",
    "is_rfc3339",
    "parse_rfc3339",
    "validate_event",
]

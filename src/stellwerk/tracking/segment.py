"""The Segment tracking API's messages (pure, no I/O): what a request body holds, whether a
message is one Segment would take, and the CloudEvent it becomes.

The SDKs of Segment and RudderStack send the same shapes: one message to `/v1/track`,
`/v1/identify`, ... or many as `{"batch": [...]}` to `/v1/batch` (and `/v1/import`), where the
batch's own `context`, `integrations` and `sentAt` apply to every message that lacks them.
"""

from __future__ import annotations

import uuid
from typing import Any, Final

from stellwerk.events import CloudEvent, is_rfc3339
from stellwerk.service import InvalidRequest, PayloadTooLarge
from stellwerk.tracking.collector import Problem, Tracked, tracked

TYPES: Final = frozenset({"track", "identify", "page", "screen", "group", "alias"})
MAX_ID_LENGTH: Final = 256
# Batch-level members that apply to each message of the batch that has none of its own.
_SHARED: Final = ("context", "integrations", "sentAt")
_OBJECTS: Final = ("context", "integrations", "properties", "traits")


def messages_of(body: Any, kind: str | None, *, max_batch: int) -> list[Any]:
    """The messages of a request body, or `InvalidRequest` / `PayloadTooLarge` for a body
    that holds none in the right shape. `kind` is the endpoint's message type (`track`), or None
    for `/v1/batch`. The write key is taken out of every message: it names the source and is
    no part of the event."""
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object", code="NotAnObject")
    # The body was decoded for this request alone: its messages are changed in place.
    if kind is not None:
        body.pop("writeKey", None)
        body["type"] = kind
        return [body]
    batch = body.get("batch")
    if not isinstance(batch, list):
        raise InvalidRequest(
            "the body must hold the messages in 'batch', a list", code="InvalidBatch", field="batch"
        )
    if len(batch) > max_batch:
        raise PayloadTooLarge(
            f"the batch holds {len(batch)} messages; the limit is {max_batch}",
            code="BatchTooLarge",
            field="batch",
        )
    shared = [(name, body[name]) for name in _SHARED if body.get(name) is not None]
    for item in batch:
        if isinstance(item, dict):  # anything else is refused on its own, by `check`
            item.pop("writeKey", None)
            for name, value in shared:
                if item.get(name) is None:
                    # A copy of its own, so that refining one message's context leaves the
                    # others' alone (deeper values are still shared).
                    item[name] = dict(value) if isinstance(value, dict) else value
    return batch


def _id(value: Any) -> str | None:
    """An id as Segment takes one (a non-empty string, or a number), as text; else None."""
    if isinstance(value, str):
        return value if value else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def check(message: Any) -> Problem | None:
    """What is wrong with a message, or None if Segment would take it."""
    if not isinstance(message, dict):
        return Problem("NotAnObject", "a message must be a JSON object")
    kind = message.get("type")
    if not isinstance(kind, str) or kind not in TYPES:  # a list or object is not hashable
        shown = repr(kind)[:80]
        return Problem(
            "UnknownType",
            f"type {shown} is not one of {', '.join(sorted(TYPES))}",
            "type",
        )
    message_id = message.get("messageId")
    if message_id is not None:
        text = _id(message_id)
        if text is None or len(text) > MAX_ID_LENGTH:
            return Problem(
                "InvalidField",
                f"messageId must be a non-empty string of at most {MAX_ID_LENGTH} characters",
                "messageId",
            )
    for name in ("userId", "anonymousId"):
        if message.get(name) is not None and _id(message[name]) is None:
            return Problem("InvalidField", f"{name} must be a non-empty string or a number", name)
    if _id(message.get("userId")) is None and _id(message.get("anonymousId")) is None:
        return Problem("MissingField", "a message needs a userId or an anonymousId", "userId")
    for name in _OBJECTS:
        if message.get(name) is not None and not isinstance(message[name], dict):
            return Problem("InvalidField", f"{name} must be an object", name)
    for name in ("timestamp", "originalTimestamp", "sentAt"):
        if message.get(name) is not None and not isinstance(message[name], str):
            return Problem("InvalidField", f"{name} must be an ISO 8601 string", name)
    if kind == "track":
        event = message.get("event")
        if not isinstance(event, str) or not event:
            return Problem("MissingField", "a track message needs an event name", "event")
    elif kind == "group" and _id(message.get("groupId")) is None:
        return Problem("MissingField", "a group message needs a groupId", "groupId")
    elif kind == "alias":
        if _id(message.get("previousId")) is None:
            return Problem("MissingField", "an alias message needs a previousId", "previousId")
        if _id(message.get("userId")) is None:
            return Problem("MissingField", "an alias message needs a userId", "userId")
    for name in ("name", "category"):
        if message.get(name) is not None and not isinstance(message[name], str):
            return Problem("InvalidField", f"{name} must be a string", name)
    return None


def tracked_of(message: dict[str, Any], source: str) -> Tracked:
    """The event of a message that passed `check`: type `segment.<type>`, id its `messageId`
    (so an SDK's retry is a duplicate), subject the user it is about, the message itself as
    data. A message without a `messageId` gets a random one (it cannot be deduplicated);
    `time` is the message's `timestamp` when that is RFC 3339."""
    message_id = _id(message.get("messageId")) or str(uuid.uuid4())
    subject = _id(message.get("userId")) or _id(message.get("anonymousId"))
    timestamp = message.get("timestamp")
    return tracked(
        message_id,
        source,
        "segment." + message["type"],
        subject,
        timestamp if isinstance(timestamp, str) and is_rfc3339(timestamp) else None,
        message,
    )


def event_of(message: dict[str, Any], source: str) -> CloudEvent:
    """`tracked_of` as a `CloudEvent`."""
    return tracked_of(message, source).event()


class SegmentProtocol:
    """The Segment protocol as the collector takes one (`TrackingProtocol`)."""

    check = staticmethod(check)
    tracked = staticmethod(tracked_of)


SEGMENT: Final = SegmentProtocol()

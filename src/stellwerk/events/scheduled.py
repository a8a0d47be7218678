"""The event a scheduled rule's tick makes: EventBridge's "Scheduled Event" from `aws.events`,
its subject the rule's name. The router sends it to that rule's targets alone (no pattern sees
it), and its id is fixed by the rule and the tick, so a tick sent twice (a scheduler taking over
from one that stalled) is one event in the log."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Final

import msgspec

from stellwerk.events.envelope import RESOURCES_EXTENSION
from stellwerk.events.model import CloudEvent

SOURCE: Final = "aws.events"
TYPE: Final = "Scheduled Event"
_IDS: Final = uuid.UUID("8d0b8a4e-6c0e-4f63-9f52-0d7f6f3b5e21")


def scheduled_event(tenant: str, bus: str, rule: str, tick: datetime) -> CloudEvent:
    """Rule `rule` of `tenant`'s `bus`, ticking at `tick` (a whole minute, UTC)."""
    when = tick.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    resource = f"stellwerk:rule/{bus}/{rule}"
    return CloudEvent(
        id=str(uuid.uuid5(_IDS, f"{tenant}/{bus}/{rule}/{when}")),
        source=SOURCE,
        type=TYPE,
        subject=rule,
        time=when,
        datacontenttype="application/json",
        data={},
        extensions={RESOURCES_EXTENSION: msgspec.json.encode([resource]).decode()},
    )

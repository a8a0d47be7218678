"""Checking an event's `data` against the schema of its type."""

from __future__ import annotations

import msgspec

from stellwerk.events import CloudEvent
from stellwerk.schemas.compiled import CompiledSchema, SchemaViolation


def event_violations(event: CloudEvent, schema: CompiledSchema) -> list[SchemaViolation]:
    """How the event's data breaks the schema (empty when it conforms).

    Data given as `data_base64` is binary and cannot conform to a JSON Schema; an event without
    data is checked as JSON `null`, so a schema that requires an object refuses it.
    """
    if event.data_base64 is not None:
        return [SchemaViolation(path="/", message="data is binary (data_base64), not JSON")]
    data = None if event.data is msgspec.UNSET else event.data
    if schema.is_valid(data):
        return []
    return schema.violations(data)

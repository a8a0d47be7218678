"""JSON Schemas for event data (drafts 4 to 2020-12, via jsonschema-rs): pure core, no I/O."""

from stellwerk.schemas.compiled import (
    MAX_SCHEMA_BYTES,
    CompiledSchema,
    InvalidSchemaError,
    SchemaViolation,
    compile_schema,
)
from stellwerk.schemas.events import event_violations

__all__ = [
    "MAX_SCHEMA_BYTES",
    "CompiledSchema",
    "InvalidSchemaError",
    "SchemaViolation",
    "compile_schema",
    "event_violations",
]

"""A user's JSON Schema, checked once when it is saved and compiled for validating event data.

The draft follows the schema's `$schema` (4, 6, 7, 2019-09 or 2020-12; 2020-12 when absent).
References may only point inside the schema: a remote `$ref` would make Stellwerk fetch a URL
chosen by a user (server-side request forgery) and make validation depend on another server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import jsonschema_rs
import msgspec

MAX_SCHEMA_BYTES: Final = 256 * 1024
MAX_REPORTED_VIOLATIONS: Final = 10


class InvalidSchemaError(ValueError):
    """The text is not a JSON Schema Stellwerk can use; the message says why."""


@dataclass(frozen=True, slots=True)
class SchemaViolation:
    """One way the data breaks the schema: where (a JSON pointer into the data) and what."""

    path: str
    message: str


def _no_remote_references(uri: str) -> Any:
    raise InvalidSchemaError(f"remote references are not allowed ({uri}); inline the definition")


def _pointer(parts: Any) -> str:
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in parts) or "/"


class CompiledSchema:
    def __init__(self, schema: Any, validator: Any) -> None:
        self.schema = schema
        self._validator = validator

    def is_valid(self, instance: Any) -> bool:
        return bool(self._validator.is_valid(instance))

    def violations(
        self, instance: Any, limit: int = MAX_REPORTED_VIOLATIONS
    ) -> list[SchemaViolation]:
        found = []
        for error in self._validator.iter_errors(instance):
            found.append(SchemaViolation(path=_pointer(error.instance_path), message=error.message))
            if len(found) >= limit:
                break
        return found


def compile_schema(schema: Any) -> CompiledSchema:
    """Check and compile a schema (a decoded JSON value); raise `InvalidSchemaError` if unusable."""
    if not isinstance(schema, dict | bool):
        raise InvalidSchemaError("a JSON Schema must be an object (or true/false)")
    size = len(msgspec.json.encode(schema))
    if size > MAX_SCHEMA_BYTES:
        raise InvalidSchemaError(f"the schema is {size} bytes; the limit is {MAX_SCHEMA_BYTES}")
    try:
        validator = jsonschema_rs.validator_for(schema, retriever=_no_remote_references)
    except jsonschema_rs.ValidationError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid schema"
        raise InvalidSchemaError(f"not a valid JSON Schema: {first_line}") from None
    except (ValueError, TypeError) as exc:
        raise InvalidSchemaError(f"not a valid JSON Schema: {exc}") from None
    return CompiledSchema(schema, validator)

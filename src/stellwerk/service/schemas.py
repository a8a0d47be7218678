"""The schema registry of a tenant: JSON Schemas per event type, in numbered versions."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

import msgspec

from stellwerk.auth import Principal
from stellwerk.schemas import InvalidSchemaError, compile_schema
from stellwerk.service.errors import InvalidRequest, NotFound, ValidationFailed
from stellwerk.storage.control import ControlPlane, SchemaRecord

TYPE_RULE = "[A-Za-z0-9._:-]{1,256}"
_TYPE = re.compile(rf"^{TYPE_RULE}\Z")
MAX_DESCRIPTION = 512


class SchemaInput(msgspec.Struct, forbid_unknown_fields=True):
    """`schema` is a JSON Schema (draft 4, 6, 7, 2019-09 or 2020-12) for the events' `data`."""

    # Documented, not decoded, as an object or a boolean: `compile_schema` checks it, and says
    # why a value is not a usable JSON Schema.
    schema: Annotated[Any, msgspec.Meta(extra_json_schema={"type": ["object", "boolean"]})]
    description: Annotated[str, msgspec.Meta(max_length=MAX_DESCRIPTION)] = ""


class SchemaVersion(msgspec.Struct):
    type: str
    version: int
    schema: Any
    description: str
    created_at: datetime


def _version(record: SchemaRecord) -> SchemaVersion:
    return SchemaVersion(
        type=record.type,
        version=record.version,
        schema=record.document,
        description=record.description,
        created_at=record.created_at,
    )


def checked_type(value: str) -> str:
    if not _TYPE.match(value):
        raise InvalidRequest(f"event type {value!r} must match {TYPE_RULE}", field="type")
    return value


def _missing(type_: str, version: int | None) -> NotFound:
    return NotFound.of(f"schema {type_!r}" + (f" version {version}" if version else ""))


class Schemas:
    def __init__(self, control: ControlPlane) -> None:
        self._control = control

    async def put(
        self, principal: Principal, type_: str, body: SchemaInput
    ) -> tuple[SchemaVersion, bool]:
        """Add a version (an unchanged schema adds none); it and whether it is new."""
        try:
            compile_schema(body.schema)
        except InvalidSchemaError as exc:
            raise ValidationFailed(str(exc), code="InvalidSchema", field="$.schema") from None
        if len(body.description) > MAX_DESCRIPTION:
            raise ValidationFailed(
                f"description is longer than {MAX_DESCRIPTION}", field="$.description"
            )
        record, created = await self._control.schemas.put(
            principal.tenant_id, type_, body.schema, body.description
        )
        return _version(record), created

    async def get(self, principal: Principal, type_: str, version: int | None) -> SchemaVersion:
        record = await self._control.schemas.get(principal.tenant_id, type_, version)
        if record is None:
            raise _missing(type_, version)
        return _version(record)

    async def versions(self, principal: Principal, type_: str) -> list[SchemaVersion]:
        records = await self._control.schemas.versions(principal.tenant_id, type_)
        if not records:
            raise _missing(type_, None)
        return [_version(r) for r in records]

    async def delete(self, principal: Principal, type_: str, version: int | None) -> None:
        if not await self._control.schemas.delete(principal.tenant_id, type_, version):
            raise _missing(type_, version)

    async def latest(self, principal: Principal) -> list[SchemaVersion]:
        records = await self._control.schemas.latest_of_each(principal.tenant_id)
        return [_version(r) for r in records]

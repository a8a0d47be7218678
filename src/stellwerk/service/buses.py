"""Buses of a tenant: create or update, describe, list, delete."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from stellwerk.auth import Principal
from stellwerk.names import InvalidNameError, check_name
from stellwerk.refs import TenantId
from stellwerk.service.errors import Conflict, InvalidRequest, NotFound, ValidationFailed
from stellwerk.storage.control import BusRecord, ConflictError, ControlPlane, NotFoundError

ValidationMode = Literal["off", "warn", "enforce"]
MAX_DESCRIPTION = 512


class BusInput(msgspec.Struct, forbid_unknown_fields=True):
    """The body of `PUT /v1/buses/{bus}` (optional: an empty body creates the bus as it is).

    `schema_validation`: `off` (default), `warn` (store, but report events that break their
    type's schema), `enforce` (keep such events in the failed-events store instead of the bus).
    """

    description: Annotated[str, msgspec.Meta(max_length=MAX_DESCRIPTION)] = ""
    schema_validation: ValidationMode = "off"


class Bus(msgspec.Struct):
    name: str
    description: str
    schema_validation: ValidationMode
    created_at: datetime
    updated_at: datetime


def _bus(record: BusRecord) -> Bus:
    return Bus(
        name=record.name,
        description=record.description,
        schema_validation=record.schema_validation,  # type: ignore[arg-type]
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


def checked_name(kind: str, name: str, field: str) -> str:
    """`name` if it is a valid name of a `kind`, else `InvalidRequest` naming `field`."""
    try:
        return check_name(kind, name)
    except InvalidNameError as exc:
        raise InvalidRequest(str(exc), field=field) from None


class Buses:
    def __init__(self, control: ControlPlane, *, max_buses: int) -> None:
        self._control = control
        self._max_buses = max_buses

    async def put(self, principal: Principal, name: str, body: BusInput) -> tuple[Bus, bool]:
        """Create or update bus `name`; the bus and whether it was created."""
        if len(body.description) > MAX_DESCRIPTION:
            raise ValidationFailed(
                f"description is longer than {MAX_DESCRIPTION} characters", field="$.description"
            )
        try:
            record, created = await self._control.put_bus(
                principal.tenant_id,
                name,
                description=body.description,
                schema_validation=body.schema_validation,
                max_buses=self._max_buses,
            )
        except ConflictError as exc:
            raise Conflict(str(exc), code="LimitExceeded") from None
        return _bus(record), created

    async def get(self, principal: Principal, name: str) -> Bus:
        return _bus(await self.record(principal.tenant_id, name))

    async def record(self, tenant_id: TenantId, name: str) -> BusRecord:
        """The bus, or `NotFound`: the check every use case of a bus starts with."""
        record = await self._control.get_bus(tenant_id, name)
        if record is None:
            raise NotFound.of(f"bus {name!r}")
        return record

    async def all(self, principal: Principal) -> list[Bus]:
        return [_bus(r) for r in await self._control.list_buses(principal.tenant_id)]

    async def delete(self, principal: Principal, name: str) -> None:
        try:
            await self._control.delete_bus(principal.tenant_id, name)
        except NotFoundError:
            raise NotFound.of(f"bus {name!r}") from None
        except ConflictError as exc:
            raise Conflict(str(exc)) from None

"""Connections: reusable authorization for HTTP targets (`basic`, `api_key`,
`oauth_client_credentials`). Secrets are sealed at rest and never shown again once saved."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from stellwerk.auth import Principal
from stellwerk.delivery.targets import parse_connection
from stellwerk.rules import InvalidConnectionError, public_view
from stellwerk.service.errors import InvalidRequest, NotFound
from stellwerk.storage.control import ConnectionRecord, ControlPlane


class Connection(msgspec.Struct):
    name: str
    connection: dict[str, Any]
    created_at: datetime
    updated_at: datetime


def _view(record: ConnectionRecord) -> Connection:
    return Connection(record.name, public_view(record.spec), record.created_at, record.updated_at)


class Connections:
    def __init__(self, control: ControlPlane, *, allow_private: bool) -> None:
        self._control = control
        self._allow_private = allow_private

    async def put(
        self, principal: Principal, name: str, body: dict[str, Any]
    ) -> tuple[Connection, bool]:
        """Create or replace a connection; the rules that use it use the new one at once."""
        try:
            spec = parse_connection(body, allow_private=self._allow_private)
        except InvalidConnectionError as exc:
            raise InvalidRequest(
                str(exc), code="InvalidConnection", field=f"$.{exc.field}"
            ) from None
        record, created = await self._control.connections.put(principal.tenant_id, name, spec)
        return _view(record), created

    async def get(self, principal: Principal, name: str) -> Connection:
        record = await self._control.connections.get(principal.tenant_id, name)
        if record is None:
            raise NotFound.of(f"connection {name!r}")
        return _view(record)

    async def all(self, principal: Principal) -> list[Connection]:
        return [_view(r) for r in await self._control.connections.for_tenant(principal.tenant_id)]

    async def delete(self, principal: Principal, name: str) -> None:
        if not await self._control.connections.delete(principal.tenant_id, name):
            raise NotFound.of(f"connection {name!r}")

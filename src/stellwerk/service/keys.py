"""API keys of a tenant: create (the key shown once), list (never the key), revoke."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from stellwerk.auth import Scope
from stellwerk.refs import TenantId
from stellwerk.service.errors import NotFound, ValidationFailed
from stellwerk.storage.control import ApiKeyRecord, ControlPlane, NotFoundError

MAX_DESCRIPTION = 256


class KeyInput(msgspec.Struct, forbid_unknown_fields=True):
    scope: Literal["ingest", "read", "admin"]
    description: str = ""


class KeyInfo(msgspec.Struct):
    id: str
    scope: str
    description: str
    created_at: datetime
    revoked_at: datetime | None


class CreatedKey(msgspec.Struct):
    """A new key. `key` is shown this once and is not stored anywhere."""

    id: str
    key: str
    scope: str
    description: str
    created_at: datetime


def _info(record: ApiKeyRecord) -> KeyInfo:
    return KeyInfo(
        id=record.id,
        scope=str(record.scope),
        description=record.description,
        created_at=record.created_at,
        revoked_at=record.revoked_at,
    )


class Keys:
    """Keys by tenant id: the API's caller's tenant, or the one the command line names."""

    def __init__(self, control: ControlPlane) -> None:
        self._control = control

    async def create(self, tenant_id: TenantId, body: KeyInput) -> CreatedKey:
        if len(body.description) > MAX_DESCRIPTION:
            raise ValidationFailed(
                f"description is longer than {MAX_DESCRIPTION} characters", field="$.description"
            )
        record, key = await self._control.create_key(tenant_id, Scope(body.scope), body.description)
        return CreatedKey(
            id=record.id,
            key=key,
            scope=body.scope,
            description=record.description,
            created_at=record.created_at,
        )

    async def all(self, tenant_id: TenantId) -> list[KeyInfo]:
        return [_info(r) for r in await self._control.list_keys(tenant_id)]

    async def revoke(self, tenant_id: TenantId, key_id: str) -> KeyInfo:
        """Revoke a key: refused here at once, by other processes within their key cache."""
        try:
            return _info(await self._control.revoke_key(tenant_id, key_id))
        except NotFoundError:
            raise NotFound.of(f"key {key_id!r}") from None

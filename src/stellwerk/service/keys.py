"""API keys of a tenant: create (the key shown once), list (never the key), revoke."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Literal

import msgspec

from stellwerk.auth import Scope, verify_key
from stellwerk.refs import TenantId
from stellwerk.secrets import DecryptionError
from stellwerk.service.errors import NotFound, ValidationFailed
from stellwerk.storage.control import ApiKeyRecord, ControlPlane, NotFoundError

MAX_DESCRIPTION = 256


class KeyInput(msgspec.Struct, forbid_unknown_fields=True):
    scope: Literal["ingest", "read", "admin"]
    description: Annotated[str, msgspec.Meta(max_length=MAX_DESCRIPTION)] = ""


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


class KeyDigest(msgspec.Struct, frozen=True):
    """A key as another site of the tenant may take it in: its digest, never the key."""

    id: str
    scope: Literal["ingest", "read", "admin"]
    key_hash: str
    description: str
    created_at: datetime
    revoked_at: datetime | None


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

    async def digests(self, tenant_id: TenantId) -> list[KeyDigest]:
        """The tenant's keys as a peer site takes them in (`adopt`): digests only."""
        return (await self.for_peer(tenant_id))[0]

    async def for_peer(self, tenant_id: TenantId) -> tuple[list[KeyDigest], list[str]]:
        """The tenant's keys' digests, and the ids of its live keys with a sealed copy (those
        `texts` opens, unless one was sealed under another secret key), from one read and
        without opening any key: what a peer's snapshot is made of, and compared by."""
        records = await self._control.list_keys(tenant_id)
        digests = [
            KeyDigest(
                id=r.id,
                scope=str(r.scope),  # type: ignore[arg-type]
                key_hash=r.key_hash,
                description=r.description,
                created_at=r.created_at,
                revoked_at=r.revoked_at,
            )
            for r in records
        ]
        signing = [r.id for r in records if r.revoked_at is None and r.sealed_key is not None]
        return digests, signing

    async def texts(self, tenant_id: TenantId) -> dict[str, str]:
        """The texts of the tenant's live keys that can sign requests here (those with a sealed
        copy that opens), by key id: for a peer site to seal as its own (`adopt`), so that they
        sign requests there too. Never logged, never in an answer; the caller encrypts them."""
        opened: dict[str, str] = {}
        for record in await self._control.list_keys(tenant_id):
            if record.revoked_at is not None:
                continue
            try:
                text = self._control.open_sealed_key(record)
            except DecryptionError:
                continue  # sealed under another secret key: it cannot sign here either
            if text is not None:
                opened[record.id] = text
        return opened

    async def adopt(
        self,
        tenant_id: TenantId,
        digests: list[KeyDigest],
        texts: Mapping[str, str] | None = None,
    ) -> int:
        """Take in the keys of the tenant's peer site: each authenticates here as there, and
        one revoked there is revoked here. A key whose text comes in `texts` (see `texts`) and
        matches its digest is sealed here too, so it signs requests here as well; a text that
        does not match its digest is not taken. How many keys were added, revoked or sealed."""
        texts = texts or {}
        changed = 0
        for d in digests:
            record = ApiKeyRecord(
                id=d.id,
                tenant_id=tenant_id,
                scope=Scope(d.scope),
                key_hash=d.key_hash,
                description=d.description,
                created_at=d.created_at,
                revoked_at=d.revoked_at,
            )
            text = texts.get(d.id)
            if text is not None and not verify_key(text, d.key_hash):
                text = None
            changed += await self._control.adopt_key(tenant_id, record, text)
        return changed

    async def revoke(self, tenant_id: TenantId, key_id: str) -> KeyInfo:
        """Revoke a key: refused here at once, by other processes within their key cache."""
        try:
            return _info(await self._control.revoke_key(tenant_id, key_id))
        except NotFoundError:
            raise NotFound.of(f"key {key_id!r}") from None

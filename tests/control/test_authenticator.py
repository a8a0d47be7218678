"""The authenticator remembers keys that passed, but never past the record they were checked
against: revocation through this process is immediate, elsewhere it takes the cache's TTL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from stellwerk.api.errors import api_error
from stellwerk.auth import Scope
from stellwerk.service import Authenticator, Unauthorized
from stellwerk.storage.control import ControlPlane


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def control(database_url: str) -> AsyncIterator[ControlPlane]:
    plane = await ControlPlane.open(database_url)
    yield plane
    await plane.close()


async def _refused(authenticator: Authenticator, authorization: str) -> int:
    with pytest.raises(Unauthorized) as refused:
        await authenticator.authenticate(authorization)
    return api_error(refused.value).status


async def test_a_remembered_key_is_dropped_with_its_record(control: ControlPlane) -> None:
    clock = Clock()
    tenant = await control.create_tenant("acme")
    record, key = await control.create_key(tenant.id, Scope.INGEST)
    authenticator = Authenticator(control, cache_seconds=5, clock=clock)
    header = f"Bearer {key}"

    first = await authenticator.authenticate(header)
    assert (first.tenant, first.key_id, first.scope) == ("acme", record.id, Scope.INGEST)
    assert await authenticator.authenticate(header) is first  # remembered

    # Revoked elsewhere (another process, the CLI): honoured once the cached record expires.
    await control.revoke_key(tenant.id, record.id)
    assert await authenticator.authenticate(header) is first
    clock.now = 5.1
    assert await _refused(authenticator, header) == 401


async def test_forget_ends_a_remembered_key_at_once(control: ControlPlane) -> None:
    tenant = await control.create_tenant("acme")
    record, key = await control.create_key(tenant.id, Scope.INGEST)
    authenticator = Authenticator(control, cache_seconds=60)
    header = f"Bearer {key}"
    await authenticator.authenticate(header)
    await control.revoke_key(tenant.id, record.id)
    authenticator.forget(record.id)  # what revoking through this process does
    assert await _refused(authenticator, header) == 401


async def test_a_wrong_secret_for_a_remembered_key_id_is_refused(control: ControlPlane) -> None:
    tenant = await control.create_tenant("acme")
    _record, key = await control.create_key(tenant.id, Scope.INGEST)
    authenticator = Authenticator(control, cache_seconds=60)
    await authenticator.authenticate(f"Bearer {key}")
    forged = key[:-4] + ("aaaa" if not key.endswith("aaaa") else "bbbb")
    assert await _refused(authenticator, f"Bearer {forged}") == 401
    assert await _refused(authenticator, f"Bearer {forged}") == 401

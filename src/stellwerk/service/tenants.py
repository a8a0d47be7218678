"""Tenants: provisioning one with its first keys, and the bootstrap of an empty installation."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from stellwerk.auth import Principal, Scope
from stellwerk.names import InvalidNameError, check_name
from stellwerk.refs import TenantId, TenantName
from stellwerk.service.errors import Conflict, InvalidRequest, NotFound
from stellwerk.storage.control import DEFAULT_TENANT, ConflictError, ControlPlane, TenantRecord

BOOTSTRAP_FILE = "bootstrap.json"
OPERATOR = "operator"  # who `requested_by` names for work asked for on the command line


class ProvisionedTenant(msgspec.Struct):
    """What `tenants create` and `bootstrap.json` show, once: the only time keys are visible."""

    tenant: str
    admin_key: str
    ingest_key: str


async def provision_tenant(control: ControlPlane, name: str) -> ProvisionedTenant:
    tenant = await control.create_tenant(name)
    _, admin_key = await control.create_key(tenant.id, Scope.ADMIN, "first admin key")
    _, ingest_key = await control.create_key(tenant.id, Scope.INGEST, "first ingest key")
    return ProvisionedTenant(tenant=name, admin_key=admin_key, ingest_key=ingest_key)


class Tenants:
    def __init__(self, control: ControlPlane) -> None:
        self._control = control

    async def create(self, name: str) -> ProvisionedTenant:
        """A new tenant with its first admin and ingest keys."""
        try:
            check_name("tenant", name)
        except InvalidNameError as exc:
            raise InvalidRequest(str(exc), field="name") from None
        try:
            return await provision_tenant(self._control, name)
        except ConflictError as exc:
            raise Conflict(str(exc)) from None

    async def all(self) -> list[TenantRecord]:
        return await self._control.list_tenants()

    async def operator(self, name: str) -> Principal:
        """The principal of the operator acting for tenant `name` (the command line)."""
        tenant = await self._control.get_tenant(name)
        if tenant is None:
            raise NotFound.of(f"tenant {name!r}")
        return Principal(tenant.ref, key_id=OPERATOR, scope=Scope.ADMIN)

    async def acting_as(self, name: TenantName, actor: str) -> Principal:
        """The principal of Stellwerk's own job `actor` for the tenant named `name` (a
        capability's target delivering for a rule of that tenant's bus)."""
        tenant = await self._control.get_tenant(name)
        if tenant is None:
            raise NotFound.of(f"tenant {name!r}")
        return Principal(tenant.ref, key_id=actor, scope=Scope.ADMIN)

    async def acting(self, tenant_id: TenantId, actor: str) -> Principal:
        """The principal of Stellwerk's own job `actor` acting for tenant `tenant_id` (a
        capability's background work: maintenance that starts on time, a synthetic check)."""
        for tenant in await self._control.list_tenants():
            if tenant.id == tenant_id:
                return Principal(tenant.ref, key_id=actor, scope=Scope.ADMIN)
        raise NotFound.of(f"tenant {tenant_id!r}")

    async def bootstrap(self, data_dir: Path) -> Path | None:
        """On an installation without tenants, create `default` and write its keys to
        bootstrap.json. Returns the file's path when it was written now. Safe when several
        processes start at once: only the one that creates the tenant writes the file."""
        if await self._control.list_tenants():
            return None
        try:
            provisioned = await provision_tenant(self._control, DEFAULT_TENANT)
        except ConflictError:
            return None
        path = data_dir / BOOTSTRAP_FILE
        write_private(path, msgspec.json.format(msgspec.json.encode(provisioned)) + b"\n")
        return path


def write_private(path: Path, content: bytes) -> None:
    """Write a file only its owner can read, atomically: it never exists with wider permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)

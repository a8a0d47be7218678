"""Who is calling: the tenant and scope an API key grants."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from stellwerk.refs import BusRef, TenantId, TenantName, TenantRef


class Scope(enum.StrEnum):
    """What a key may do. `admin` includes `read` and `ingest`; the others include nothing."""

    INGEST = "ingest"
    READ = "read"
    ADMIN = "admin"

    def allows(self, needed: Scope) -> bool:
        return self is needed or self is Scope.ADMIN


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: its tenant, resolved once from the key, the key and its scope."""

    ref: TenantRef
    key_id: str
    scope: Scope

    @property
    def tenant_id(self) -> TenantId:
        """The tenant's id: what the control plane keys by."""
        return self.ref.id

    @property
    def tenant(self) -> TenantName:
        """The tenant's name: what the log, the queue, the archives and the leases key by."""
        return self.ref.name

    def bus(self, name: str) -> BusRef:
        """One of the tenant's buses, as the log side's seams take it (once per request)."""
        return self.ref.bus(name)

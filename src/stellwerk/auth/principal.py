"""Who is calling: the tenant and scope an API key grants."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Scope(enum.StrEnum):
    """What a key may do. `admin` includes `read` and `ingest`; the others include nothing."""

    INGEST = "ingest"
    READ = "read"
    ADMIN = "admin"

    def allows(self, needed: Scope) -> bool:
        return self is needed or self is Scope.ADMIN


@dataclass(frozen=True, slots=True)
class Principal:
    tenant_id: str
    tenant: str
    key_id: str
    scope: Scope

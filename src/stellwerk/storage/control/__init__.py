"""The control plane: tenants, API keys, buses (and later rules, schemas, status pages).

One implementation on SQLAlchemy Core serves both databases: SQLite in the data directory by
default, PostgreSQL (asyncpg) for scale-out. Both run the same Alembic migrations.
"""

from stellwerk.storage.control.records import ConflictError, NotFoundError
from stellwerk.storage.control.store import ApiKeyRecord, BusRecord, ControlPlane, TenantRecord

__all__ = [
    "ApiKeyRecord",
    "BusRecord",
    "ConflictError",
    "ControlPlane",
    "NotFoundError",
    "TenantRecord",
]

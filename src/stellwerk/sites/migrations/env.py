"""Alembic environment of the sites capability's tables: their own chain, versioned in their own
table, run on a connection handed in by `stellwerk.capability.Database.migrate`."""

from __future__ import annotations

from stellwerk.capability import run_migration_environment
from stellwerk.sites.tables import VERSION_TABLE, metadata

run_migration_environment(metadata, VERSION_TABLE)

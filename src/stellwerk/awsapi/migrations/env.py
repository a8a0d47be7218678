"""Alembic environment of the EventBridge API's tables: their own chain, versioned in their own
table, run on a connection handed in by `stellwerk.capability.Database.migrate`."""

from __future__ import annotations

from stellwerk.awsapi.tables import VERSION_TABLE, metadata
from stellwerk.capability import run_migration_environment

run_migration_environment(metadata, VERSION_TABLE)

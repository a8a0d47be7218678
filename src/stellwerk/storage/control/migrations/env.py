"""Alembic environment: migrations always run on a connection handed in by `migrate.upgrade`.

Stellwerk migrates programmatically at start (and from `stellwerk migrate`), sharing the async
engine's connection, so there is no alembic.ini and no URL here.
"""

from __future__ import annotations

from alembic import context

from stellwerk.storage.control.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through stellwerk.storage.control.migrate")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()

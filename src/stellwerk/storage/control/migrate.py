"""Run the control plane's Alembic migrations on an async engine (SQLite or PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
import structlog
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS = Path(__file__).parent / "migrations"

log = structlog.get_logger("stellwerk.control")


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


# Any constant number shared by every Stellwerk process: the key of the migration lock.
MIGRATION_LOCK_KEY = 0x5354454C  # "STEL"


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Migrate to `revision`. On PostgreSQL, processes that start together take turns: the
    first migrates inside its transaction while the others wait on an advisory lock, then
    find nothing left to do (PostgreSQL's DDL is transactional)."""
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"))
        before, after = await conn.run_sync(lambda sync: _upgrade(sync, revision))
    if before != after:
        log.info("control plane migrated", dialect=engine.dialect.name, old=before, new=after)


def _upgrade(sync: Connection, revision: str) -> tuple[str | None, str | None]:
    def current() -> str | None:
        return MigrationContext.configure(sync).get_current_revision()

    before = current()
    command.upgrade(_config(sync), revision)
    return before, current()


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(lambda sync: command.downgrade(_config(sync), revision))


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )

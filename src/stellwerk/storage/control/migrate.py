"""Run the control plane's Alembic migrations on an async engine (SQLite or PostgreSQL).

Alembic loads only when there is something to migrate: every process migrates at start, and
on a database already at the heads (each start but the first) that is one query, without
Alembic's import (about 0.4 s of a process's start on two cores).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"

log = structlog.get_logger("stellwerk.control")

_REVISION = re.compile(r"^revision(?::[^=]+)? = (.+)$", re.MULTILINE)
_DOWN_REVISION = re.compile(r"^down_revision(?::[^=]+)? = (.+)$", re.MULTILINE)
_DEPENDS_ON = re.compile(r"^depends_on(?::[^=]+)? = (.+)$", re.MULTILINE)
_QUOTED = re.compile(r"\"([^\"]+)\"")


def _config(connection: Connection | None = None, location: Path = MIGRATIONS) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(location))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def heads_on_file(location: Path = MIGRATIONS) -> frozenset[str] | None:
    """The chain's heads as its files say them, read without Alembic: each revision that no
    other revises. None when a file does not say it plainly (no revision line, a
    `depends_on`): then Alembic decides. A test holds this to Alembic's own answer."""
    revisions: set[str] = set()
    revised: set[str] = set()
    for path in (location / "versions").glob("*.py"):
        if path.name == "__init__.py":
            continue
        text = path.read_text()
        revision, down = _REVISION.search(text), _DOWN_REVISION.search(text)
        depends = _DEPENDS_ON.search(text)
        if revision is None or down is None or (depends and depends[1].strip() != "None"):
            return None
        named = _QUOTED.findall(revision[1])
        if len(named) != 1:
            return None
        revisions.add(named[0])
        revised.update(_QUOTED.findall(down[1]))
    return frozenset(revisions - revised) or None


# Any constant number shared by every Stellwerk process: the key of the migration lock.
MIGRATION_LOCK_KEY = 0x5354454C  # "STEL"


async def upgrade(
    engine: AsyncEngine,
    revision: str = "head",
    *,
    location: Path = MIGRATIONS,
    version_table: str = "alembic_version",
) -> None:
    """Migrate to `revision`. On PostgreSQL, processes that start together take turns: the
    first migrates inside its transaction while the others wait on an advisory lock, then
    find nothing left to do (PostgreSQL's DDL is transactional).

    `location` and `version_table` name another chain of migrations in the same database: a
    capability's own tables (`stellwerk.capability.Database.migrate`), versioned apart from the
    control plane's."""
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"))
        if await conn.run_sync(lambda sync: _at(sync, revision, location, version_table)):
            return
        before, after = await conn.run_sync(
            lambda sync: _upgrade(sync, revision, location, version_table)
        )
    if before != after:
        log.info(
            "control plane migrated",
            chain=version_table,
            dialect=engine.dialect.name,
            old=before,
            new=after,
        )


def _at(sync: Connection, revision: str, location: Path, version_table: str) -> bool:
    """Whether the database is at `revision` already ("head" or "heads" of the files), read as
    Alembic keeps it (a row per head in the version table), without Alembic."""
    heads = heads_on_file(location) if revision in ("head", "heads") else None
    if heads is None or (revision == "head" and len(heads) != 1):
        return False
    if not sa.inspect(sync).has_table(version_table):
        return False
    table = sa.table(version_table, sa.column("version_num", sa.String))
    stamped: list[str] = list(sync.execute(sa.select(table.c.version_num)).scalars())
    return frozenset(stamped) == heads


def _upgrade(
    sync: Connection, revision: str, location: Path, version_table: str
) -> tuple[str | None, str | None]:
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    def current() -> str | None:
        # A chain may have branches (a capability's parts migrate apart): every head, sorted.
        context = MigrationContext.configure(sync, opts={"version_table": version_table})
        return ",".join(sorted(context.get_current_heads())) or None

    before = current()
    command.upgrade(_config(sync, location), revision)
    return before, current()


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    from alembic import command

    async with engine.begin() as conn:
        await conn.run_sync(lambda sync: command.downgrade(_config(sync), revision))


async def current_revision(engine: AsyncEngine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    async with engine.connect() as conn:
        return await conn.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )

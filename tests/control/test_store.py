"""The control plane store, on SQLite and PostgreSQL alike: migrations, tenants, keys, buses."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

import stellwerk.statuspages
from stellwerk.auth import Scope, hash_key, parse_key
from stellwerk.clock import utc_now
from stellwerk.names import InvalidNameError
from stellwerk.secrets import DecryptionError, SecretBox
from stellwerk.service import KeyInput, Keys
from stellwerk.storage.control import ConflictError, ControlPlane, NotFoundError, migrate
from stellwerk.storage.control.store import create_engine

# A capability's chain, with branches: its parts migrate apart.
STATUS_PAGE_MIGRATIONS = Path(stellwerk.statuspages.__file__).parent / "migrations"


async def test_migrations_reach_head_and_go_back_down(empty_database_url: str) -> None:
    engine = create_engine(empty_database_url)
    try:
        assert await migrate.current_revision(engine) is None
        await migrate.upgrade(engine)
        assert await migrate.current_revision(engine) == migrate.head_revision()
        async with engine.connect() as conn:
            names = await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
        assert {"tenants", "api_keys", "buses"} <= names
        # Upgrading again is a no-op (every process migrates at start).
        await migrate.upgrade(engine)
        await migrate.downgrade(engine, "base")
        async with engine.connect() as conn:
            names = await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
        assert not {"tenants", "api_keys", "buses"} & names
        await migrate.upgrade(engine)
        assert await migrate.current_revision(engine) == migrate.head_revision()
    finally:
        await engine.dispose()


@pytest.mark.parametrize("location", [migrate.MIGRATIONS, STATUS_PAGE_MIGRATIONS], ids=str)
def test_the_heads_read_from_the_migration_files_are_alembics(location: Path) -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(location))
    heads = ScriptDirectory.from_config(config).get_heads()
    assert migrate.heads_on_file(location) == frozenset(heads)


async def _migrated(url: str) -> None:
    engine = create_engine(url)
    try:
        await migrate.upgrade(engine)
    finally:
        await engine.dispose()


def test_a_database_at_the_head_is_opened_without_loading_alembic(tmp_path: Path) -> None:
    """Every process migrates at start; on a database already migrated, Alembic (its import
    is about 0.4 s of a start on two cores) stays unloaded."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'control.db'}"
    asyncio.run(_migrated(url))
    opened = subprocess.run(
        [sys.executable, "-c", OPEN_AND_LIST_MODULES, url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    loaded = set(opened.stdout.split())
    assert "stellwerk.storage.control" in loaded
    assert not {name for name in loaded if name.split(".")[0] == "alembic"}


OPEN_AND_LIST_MODULES = """
import asyncio, sys
from stellwerk.storage.control import ControlPlane

async def main():
    control = await ControlPlane.open(sys.argv[1])
    await control.close()

asyncio.run(main())
print(" ".join(sys.modules))
"""


async def test_processes_starting_together_on_an_empty_postgres_database_all_migrate(
    postgres_url: str,
) -> None:
    """Scale-out processes start at once: without the migration lock, all but one fail on
    "relation already exists" (seen with four engines before the lock)."""
    engines = [create_engine(postgres_url) for _ in range(4)]
    try:
        await asyncio.gather(*(migrate.upgrade(engine) for engine in engines))
        for engine in engines:
            assert await migrate.current_revision(engine) == migrate.head_revision()
    finally:
        for engine in engines:
            await engine.dispose()


@pytest.fixture
async def control(database_url: str) -> AsyncIterator[ControlPlane]:
    plane = await ControlPlane.open(database_url)
    yield plane
    await plane.close()


async def test_a_tenant_starts_with_the_default_bus(control: ControlPlane) -> None:
    tenant = await control.create_tenant("acme")
    assert [b.name for b in await control.list_buses(tenant.id)] == ["default"]
    assert (await control.get_tenant("acme")) == tenant
    with pytest.raises(ConflictError, match="already exists"):
        await control.create_tenant("acme")
    with pytest.raises(InvalidNameError, match=r"\[A-Za-z0-9._-\]\{1,64\}"):
        await control.create_tenant("no spaces")


async def test_keys_are_stored_only_as_hashes_and_can_be_revoked(control: ControlPlane) -> None:
    tenant = await control.create_tenant("acme")
    record, key = await control.create_key(tenant.id, Scope.INGEST, "ci")
    assert parse_key(key).key_id == record.id
    async with control.engine.connect() as conn:
        rows = (await conn.execute(sa.text("SELECT * FROM api_keys"))).mappings().all()
    stored = " ".join(str(v) for row in rows for v in row.values())
    assert parse_key(key).secret not in stored
    assert rows[0]["key_hash"] == hash_key(key)

    found = await control.find_key(record.id)
    assert found is not None
    assert found[0].scope is Scope.INGEST
    assert found[1].name == "acme"
    revoked = await control.revoke_key(tenant.id, record.id)
    assert revoked.revoked_at is not None
    again = await control.find_key(record.id)
    assert again is not None
    assert again[0].revoked_at is not None


async def test_a_key_adopted_from_another_site_authenticates_and_follows_its_revocation(
    control: ControlPlane,
) -> None:
    there = await control.create_tenant("acme")
    other = await control.create_tenant("other")
    record, key = await control.create_key(there.id, Scope.INGEST, "made on the peer")
    async with control.engine.begin() as conn:  # as if it was made on another site
        await conn.execute(sa.text("DELETE FROM api_keys"))
    here = there.id
    assert await control.adopt_key(here, record) is True
    assert await control.adopt_key(here, record) is False  # already here: nothing changes
    found = await control.find_key(record.id)
    assert found is not None
    assert (found[0].key_hash, found[0].sealed_key, found[1].name) == (hash_key(key), None, "acme")
    assert await control.adopt_key(other.id, dataclasses.replace(record, revoked_at=utc_now())) is (
        False
    )  # another tenant's copy of the id changes nothing
    assert await control.adopt_key(here, dataclasses.replace(record, revoked_at=utc_now()))
    again = await control.find_key(record.id)
    assert again is not None
    assert again[0].revoked_at is not None


async def test_a_key_adopted_with_its_text_is_sealed_with_this_sites_secret_key(
    database_url: str,
) -> None:
    # Two sites' control planes, each with its own secret key (one database: the rows of the
    # first are removed before the second takes the key in, as in the test above).
    origin = await ControlPlane.open(database_url, box=SecretBox(os.urandom(32)))
    here = await ControlPlane.open(
        database_url, run_migrations=False, box=SecretBox(os.urandom(32))
    )
    try:
        tenant = await origin.create_tenant("acme")
        made = await Keys(origin).create(tenant.id, KeyInput(scope="admin"))
        spare = await Keys(origin).create(tenant.id, KeyInput(scope="ingest"))
        digests = await Keys(origin).digests(tenant.id)
        texts = await Keys(origin).texts(tenant.id)
        assert texts == {made.id: made.key, spare.id: spare.key}
        await origin.revoke_key(tenant.id, spare.id)
        assert await Keys(origin).texts(tenant.id) == {made.id: made.key}  # live keys only
        assert (await Keys(origin).for_peer(tenant.id))[1] == [made.id]
        async with origin.engine.begin() as conn:
            await conn.execute(sa.text("DELETE FROM api_keys"))

        # Taken first without texts (a peer of an older version): no sealed copy.
        assert await Keys(here).adopt(tenant.id, digests) == 2
        # A text that is not the key of its digest is not taken.
        assert await Keys(here).adopt(tenant.id, digests, {made.id: spare.key}) == 0
        # The texts come: each key is sealed with this site's secret key, not the origin's.
        assert await Keys(here).adopt(tenant.id, digests, texts) == 2
        assert await Keys(here).adopt(tenant.id, digests, texts) == 0
        found = await here.find_key(made.id)
        assert found is not None
        assert found[0].sealed_key is not None
        assert parse_key(made.key).secret not in found[0].sealed_key
        assert here.open_sealed_key(found[0]) == made.key
        with pytest.raises(DecryptionError):
            origin.open_sealed_key(found[0])
    finally:
        await here.close()
        await origin.close()


async def test_keys_and_buses_are_scoped_by_tenant(control: ControlPlane) -> None:
    a = await control.create_tenant("a")
    b = await control.create_tenant("b")
    key_a, _ = await control.create_key(a.id, Scope.ADMIN)
    await control.put_bus(a.id, "orders")

    assert [k.id for k in await control.list_keys(b.id)] == []
    with pytest.raises(NotFoundError):
        await control.revoke_key(b.id, key_a.id)
    assert await control.get_bus(b.id, "orders") is None
    with pytest.raises(NotFoundError):
        await control.delete_bus(b.id, "orders")
    assert await control.get_bus(a.id, "orders") is not None


async def test_buses_update_in_place_and_respect_the_limit(control: ControlPlane) -> None:
    tenant = await control.create_tenant("acme")
    bus, created = await control.put_bus(tenant.id, "orders", description="v1", max_buses=2)
    assert created
    again, created = await control.put_bus(tenant.id, "orders", description="v2", max_buses=2)
    assert not created
    assert again.description == "v2"
    assert again.created_at == bus.created_at
    with pytest.raises(ConflictError, match="limit 2"):
        await control.put_bus(tenant.id, "payments", max_buses=2)
    with pytest.raises(ConflictError, match="default bus"):
        await control.delete_bus(tenant.id, "default")
    await control.delete_bus(tenant.id, "orders")
    assert [b.name for b in await control.list_buses(tenant.id)] == ["default"]


BRANCHED_ENV = """
from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, version_table="alembic_version_branched")
with context.begin_transaction():
    context.run_migrations()
"""
REVISION = """
import sqlalchemy as sa
from alembic import op

revision = "{name}"
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("{name}", sa.Column("id", sa.Integer, primary_key=True))


def downgrade() -> None:
    op.drop_table("{name}")
"""


async def test_a_chain_that_branches_migrates_to_every_head(
    empty_database_url: str, tmp_path: Path
) -> None:
    # A capability's helpers add revisions side by side off one base, upgraded to "heads".
    location = tmp_path / "migrations"
    (location / "versions").mkdir(parents=True)
    (location / "env.py").write_text(BRANCHED_ENV)
    for name, down in (("b0001", None), ("b0002", "b0001"), ("b0003", "b0001")):
        (location / "versions" / f"{name}.py").write_text(REVISION.format(name=name, down=down))
    engine = create_engine(empty_database_url)
    try:
        for _ in range(2):  # the second time finds nothing to do
            await migrate.upgrade(
                engine, "heads", location=location, version_table="alembic_version_branched"
            )
        async with engine.connect() as conn:
            names = await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
            heads = await conn.execute(sa.text("SELECT version_num FROM alembic_version_branched"))
            assert sorted(heads.scalars()) == ["b0002", "b0003"]
        assert {"b0001", "b0002", "b0003"} <= names
    finally:
        await engine.dispose()

"""The lake on S3, for real: `--lake-url s3://bucket/prefix` against moto's S3 server on a
loopback port (the AWS variables and `AWS_ENDPOINT_URL` as an operator sets them), with the
httpfs extension of the `lake` extra loaded by its path (no `INSTALL`, no network). Rows a rule
matches land as Parquet objects under the tenant's partition, and `POST /v1/lake/query` reads
them back, the tenant's own and nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import boto3
import duckdb
import pytest
from tests.conftest import RunningApp, app_running
from tests.nats_support import free_port
from tests.polling import eventually
from tests.tracking.test_lake import save_lake_rule, send

from stellwerk.auth import Scope
from stellwerk.config import load_settings
from stellwerk.service import provision_tenant
from stellwerk.tracking.lake import configure_s3, httpfs_file

moto_server = pytest.importorskip("moto.server")

BUCKET = "shop-lake"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 on a free port, one bucket, and the environment pointing at it."""
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ACCESS_KEY_ID", "lake-test")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "lake-test-secret")
        patch.setenv("AWS_REGION", "eu-central-1")
        patch.setenv("AWS_ENDPOINT_URL", endpoint)
        s3(endpoint).create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-central-1"}
        )
        try:
            yield endpoint
        finally:
            server.stop()


def s3(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name="eu-central-1")


def objects(endpoint: str, prefix: str) -> list[str]:
    listed = s3(endpoint).list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for o in listed.get("Contents", []))


@pytest.fixture
async def s3_app(s3_endpoint: str, tmp_path: Path) -> AsyncIterator[RunningApp]:
    settings = load_settings(
        {"data_dir": str(tmp_path / "data"), "lake_url": f"s3://{BUCKET}/{tmp_path.name}"}
    )
    async with app_running(settings) as running:
        yield running


def test_the_lake_extra_ships_httpfs_for_this_duckdb() -> None:
    # Loaded by its path: a server without network or a writable home still reads S3.
    shipped = httpfs_file()
    assert shipped is not None, "duckdb-extension-httpfs of DuckDB's own version is not installed"
    assert f"v{duckdb.__version__}" in str(shipped)
    with duckdb.connect() as db:
        db.execute("SET autoinstall_known_extensions = false")
        db.execute("SET autoload_known_extensions = false")
        configure_s3(db)
        loaded = db.execute(
            "SELECT loaded FROM duckdb_extensions() WHERE extension_name = 'httpfs'"
        ).fetchone()
    assert loaded == (True,)


async def test_rows_are_written_to_s3_and_queried_back_per_tenant(
    s3_app: RunningApp, s3_endpoint: str, tmp_path: Path
) -> None:
    app = s3_app
    prefix = tmp_path.name
    await save_lake_rule(app, roll_seconds=0.1)
    await send(
        app,
        [
            {"id": f"e-{n}", "source": "/shop", "type": "order.placed", "data": {"n": n}}
            for n in range(5)
        ],
    )

    control = app.services.stores.control
    tenant = await control.get_tenant("default")
    assert tenant is not None
    _, read = await control.create_key(tenant.id, Scope.READ)

    async def query(key: str, sql: str) -> Any:
        return await app.client.post("/v1/lake/query", headers=app.auth(key), json={"sql": sql})

    async def rows() -> list[Any]:
        answer = await query(
            read, "SELECT id, type, bus, event->>'$.data.n' AS n FROM events ORDER BY id"
        )
        assert answer.status_code == 200, answer.text
        found: list[Any] = answer.json()["rows"]
        return found

    expected = [[f"e-{n}", "order.placed", "default", str(n)] for n in range(5)]
    assert await eventually(rows, what="the rows on S3", within=30, accept=expected.__eq__)
    keys = objects(s3_endpoint, f"{prefix}/")
    assert keys
    assert all(
        k.startswith(f"{prefix}/tenant=default/bus=default/date=") and k.endswith(".parquet")
        for k in keys
    ), keys
    # Nothing of it on the local disk: the spool's scratch files are gone once written.
    assert not list((app.settings.data_dir).rglob("*.parquet"))
    # Another tenant sees an empty lake, and cannot name the first one's objects.
    await provision_tenant(control, "other")
    other_tenant = await control.get_tenant("other")
    assert other_tenant is not None
    _, other_read = await control.create_key(other_tenant.id, Scope.READ)
    empty = await query(other_read, "SELECT count(*) FROM events")
    assert (empty.status_code, empty.json()["rows"]) == (200, [[0]])
    theirs = f"s3://{BUCKET}/{prefix}/tenant=default/*/*/*.parquet"
    sneaky = await query(other_read, f"SELECT count(*) FROM read_parquet('{theirs}')")
    assert (sneaky.status_code, sneaky.json()["error"]) == (403, "QueryRefused")


def test_a_packaged_httpfs_of_another_duckdb_is_not_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    # DuckDB upgraded without the extension: its own extension directory is tried instead
    # (`LOAD httpfs`), never a file built for another version, which DuckDB would refuse.
    monkeypatch.setattr(duckdb, "__version__", "0.0.1")
    assert httpfs_file() is None

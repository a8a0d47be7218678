"""`POST /v1/lake/query`: SQL over the caller's own lake rows, read keys, one read-only SELECT;
another tenant's files, other files and anything but a SELECT are refused with a 4xx that
names the problem."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from tests.conftest import RunningApp, app_running, app_served, free_port
from tests.polling import eventually
from tests.tracking.test_lake import lake_rows, save_lake_rule, send

from stellwerk.auth import Scope
from stellwerk.cli.main import main
from stellwerk.config import load_settings
from stellwerk.refs import TenantName
from stellwerk.service import InvalidRequest, provision_tenant
from stellwerk.tracking.lake_query import LakeQuery


class Tenant:
    def __init__(self, app: RunningApp, admin: str, ingest: str, read: str) -> None:
        self.app = app
        self.admin = app.auth(admin)
        self.ingest = app.auth(ingest)
        self.read = app.auth(read)

    async def query(self, sql: str) -> Any:
        return await self.app.client.post("/v1/lake/query", headers=self.read, json={"sql": sql})


@pytest.fixture
async def two_tenants(tmp_path: Path) -> AsyncIterator[tuple[Tenant, Tenant]]:
    settings = load_settings({"data_dir": str(tmp_path / "data")})
    async with app_running(settings) as app:
        control = app.services.stores.control
        tenants = []
        for name in ("default", "other"):
            if name == "default":
                admin, ingest = app.bootstrap.admin_key, app.bootstrap.ingest_key
            else:
                made = await provision_tenant(control, name)
                admin, ingest = made.admin_key, made.ingest_key
            found = await control.get_tenant(name)
            assert found is not None
            _, read = await control.create_key(found.id, Scope.READ)
            tenants.append(Tenant(app, admin, ingest, read))
        yield tenants[0], tenants[1]


async def fill(tenant: Tenant, prefix: str, count: int) -> None:
    app = tenant.app
    saved = await app.client.put(
        "/v1/buses/default/rules/to-lake",
        headers=tenant.admin,
        json={
            "pattern": {"source": [{"prefix": ""}]},
            "targets": [{"id": "lake", "type": "lake", "parameters": {"roll_seconds": 0.1}}],
        },
    )
    assert saved.status_code in (200, 201), saved.text
    events = [
        {
            "specversion": "1.0",
            "id": f"{prefix}{n}",
            "source": "shop",
            "type": "order.placed",
            "data": {"total": n},
        }
        for n in range(count)
    ]
    sent = await app.client.post(
        "/v1/buses/default/events",
        headers={**tenant.ingest, "Content-Type": "application/cloudevents-batch+json"},
        json=events,
    )
    assert sent.status_code == 202, sent.text


async def count_of(tenant: Tenant) -> int:
    answer = await tenant.query("SELECT count(*) AS n FROM events")
    assert answer.status_code == 200, answer.text
    n: int = answer.json()["rows"][0][0]
    return n


async def test_each_tenant_queries_only_its_own_rows(two_tenants: tuple[Tenant, Tenant]) -> None:
    mine, theirs = two_tenants
    await fill(mine, "m", 3)
    await fill(theirs, "t", 5)
    await eventually(lambda: count_of(mine), accept=lambda n: n == 3)
    await eventually(lambda: count_of(theirs), accept=lambda n: n == 5)
    answer = await mine.query(
        "SELECT tenant, bus, id, type, (event->>'$.data.total')::INT AS total, date"
        " FROM events ORDER BY id"
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["columns"] == ["tenant", "bus", "id", "type", "total", "date"]
    assert [r[:5] for r in body["rows"]] == [
        ["default", "default", f"m{n}", "order.placed", n] for n in range(3)
    ]
    assert body["truncated"] is False


async def test_another_tenants_files_are_refused_by_path(
    two_tenants: tuple[Tenant, Tenant],
) -> None:
    mine, theirs = two_tenants
    await fill(theirs, "t", 2)
    await eventually(lambda: count_of(theirs), accept=lambda n: n == 2)
    lake = mine.app.settings.data_dir / "lake"
    for path in (
        f"{lake}/tenant=other/*/*/*.parquet",
        f"{lake}/tenant=default/../tenant=other/*/*/*.parquet",
        f"{lake}/**/*.parquet",
    ):
        answer = await mine.query(f"SELECT * FROM read_parquet('{path}')")
        assert answer.status_code == 403, answer.text
        assert answer.json()["error"] == "QueryRefused"
        assert answer.json()["field"] == "sql"
    refused = await mine.query("SELECT * FROM read_csv('/etc/passwd')")
    assert refused.json()["error"] == "QueryRefused"


@pytest.mark.parametrize(
    ("sql", "error"),
    [
        ("SELEC 1", "InvalidQuery"),
        ("SELECT * FROM nowhere", "InvalidQuery"),
        ("SELECT 1; SELECT 2", "InvalidQuery"),
        ("CREATE TABLE t (x INT)", "NotReadOnly"),
        ("COPY (SELECT 1) TO '/tmp/x.csv'", "NotReadOnly"),
        ("ATTACH '/tmp/x.db'", "NotReadOnly"),
        ("SET enable_external_access = true", "NotReadOnly"),
    ],
)
async def test_anything_but_one_valid_select_is_a_400_naming_it(
    two_tenants: tuple[Tenant, Tenant], sql: str, error: str
) -> None:
    mine, _ = two_tenants
    answer = await mine.query(sql)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == error
    assert answer.json()["field"] == "sql"


async def test_the_query_needs_a_read_key_and_a_sql_string(
    two_tenants: tuple[Tenant, Tenant],
) -> None:
    mine, _ = two_tenants
    client = mine.app.client
    no_key = await client.post("/v1/lake/query", json={"sql": "SELECT 1"})
    assert no_key.status_code == 401
    ingest = await client.post("/v1/lake/query", headers=mine.ingest, json={"sql": "SELECT 1"})
    assert ingest.status_code == 403
    missing = await client.post("/v1/lake/query", headers=mine.read, json={"query": "x"})
    assert (missing.status_code, missing.json()["error"]) == (422, "ValidationFailed")
    not_json = await client.post(
        "/v1/lake/query",
        headers={**mine.read, "Content-Type": "application/json"},
        content=b"SELECT 1",
    )
    assert (not_json.status_code, not_json.json()["error"]) == (400, "InvalidRequest")
    # An empty lake is an empty view, not an error.
    assert await count_of(mine) == 0


async def test_answers_are_cut_at_max_rows_and_slow_or_greedy_queries_stopped(
    tmp_path: Path,
) -> None:
    lake = tmp_path / "lake"
    (lake / "tenant=t").mkdir(parents=True)
    query = LakeQuery(str(lake), max_rows=5, timeout=0.2)
    cut = await query.run(TenantName("t"), "SELECT * FROM range(100)")
    assert (len(cut.rows), cut.truncated) == (5, True)
    with pytest.raises(InvalidRequest) as slow:
        await query.run(
            TenantName("t"), "SELECT count(*) FROM range(100000000) a, range(100000000) b"
        )
    assert slow.value.code == "QueryTimedOut"
    zoned = await query.run(
        TenantName("t"), "SELECT TIMESTAMPTZ '2026-12-04 10:00:00+00' AS at, [now()] AS l, 1 AS n"
    )
    assert zoned.types == ["TIMESTAMP WITH TIME ZONE", "TIMESTAMP WITH TIME ZONE[]", "INTEGER"]
    assert zoned.rows[0][0].startswith("2026-12-04 10:00:00")
    assert zoned.rows[0][2] == 1
    greedy = LakeQuery(str(lake), memory_limit="32MB")
    with pytest.raises(InvalidRequest) as large:
        await greedy.run(
            TenantName("t"), "SELECT list(range) FROM range(20000000) GROUP BY range % 1000000"
        )
    assert large.value.code == "QueryTooLarge"


def test_the_command_says_in_one_line_when_the_server_is_out_of_reach(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["lake", "query", "--url", url, "--key", "swk_x", "SELECT 1"]) == 2
    printed = capsys.readouterr().err.strip().splitlines()
    assert len(printed) == 1
    assert printed[0].startswith(f"stellwerk: error: cannot reach {url}")


def httpfs_loads() -> bool:
    with duckdb.connect() as db:
        try:
            db.execute("LOAD httpfs")
        except duckdb.Error:
            return False
    return True


async def test_a_lake_on_s3_without_duckdbs_httpfs_answers_503_not_500(tmp_path: Path) -> None:
    if httpfs_loads():
        pytest.skip("DuckDB's httpfs is installed here: this is about a server without it")
    settings = load_settings(
        {"data_dir": str(tmp_path / "data"), "lake_url": "s3://lake-bucket/events"}
    )
    async with app_running(settings) as app:
        answer = await app.client.post(
            "/v1/lake/query", headers=app.admin, json={"sql": "SELECT count(*) FROM events"}
        )
    assert answer.status_code == 503, answer.text
    assert "the lake on S3 cannot be read" in answer.json()["message"]
    assert answer.headers["Retry-After"] == "60"


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[str, RunningApp]]:
    """The app behind uvicorn on a loopback port, for the command to talk to."""
    settings = load_settings({"data_dir": str(tmp_path / "data"), "port": free_port()})
    async with app_served(settings) as served:
        yield served


async def test_the_command_prints_the_answer_as_a_table_or_json(
    served: tuple[str, RunningApp], capsys: pytest.CaptureFixture[str]
) -> None:
    url, app = served
    await save_lake_rule(app, roll_seconds=0.05)
    await send(app, [{"id": f"e{n}", "source": "s", "type": f"t{n % 2}"} for n in range(5)])
    await eventually(lambda: lake_rows(app), accept=lambda r: len(r) == 5)
    key = app.bootstrap.admin_key
    sql = "SELECT type, count(*) AS n FROM events GROUP BY type ORDER BY type"

    def command(*args: str) -> int:
        return main(["lake", "query", "--url", url, "--key", key, *args])

    assert await asyncio.to_thread(command, sql) == 0
    table = capsys.readouterr().out
    assert [line.split() for line in table.splitlines() if "t0" in line or "t1" in line] == [
        ["│", "t0", "│", "3", "│"],
        ["│", "t1", "│", "2", "│"],
    ]
    assert "2 rows" in table
    assert await asyncio.to_thread(command, "--json", sql) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == [["t0", 3], ["t1", 2]]
    assert await asyncio.to_thread(command, "DROP VIEW events") == 2
    assert capsys.readouterr().err.strip() == (
        "stellwerk: error: 400 NotReadOnly: only a SELECT is answered, not drop"
    )

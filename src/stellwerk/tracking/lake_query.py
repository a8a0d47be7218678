"""SQL over one tenant's part of the lake, with DuckDB: a view `events` over the tenant's
Parquet files, and nothing else to read.

Each query gets a DuckDB of its own in memory. The view is made first; then external access is
switched off except for the tenant's directory, and the configuration is locked, so that a
query naming a file (`read_parquet('.../tenant=other/...')`, `/etc/passwd`) or attaching a
database is refused by DuckDB itself. Only one statement, a SELECT, is run; its answer is cut
at `max_rows` and it is interrupted after `timeout` seconds.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from datetime import date, datetime
from datetime import time as dt_time
from pathlib import Path
from typing import Any, Final

import duckdb

from stellwerk.refs import TenantName
from stellwerk.service import Forbidden, InvalidRequest, Unavailable
from stellwerk.tracking.lake import COLUMNS, configure_s3, is_remote
from stellwerk.tracking.lake_model import MAX_SQL_CHARS, QueryResult

SQL: Final = "sql"  # the field errors name
MAX_ROWS: Final = 10_000
TIMEOUT_SECONDS: Final = 10.0
# Memory one query may use before DuckDB refuses it (it spills nothing to disk).
MEMORY_LIMIT: Final = "512MB"
# Queries answered at once per process (each on one thread); more wait their turn, so the lake
# can take at most this many cores and this many times MEMORY_LIMIT from the gateway.
CONCURRENT: Final = 2


@dataclass(frozen=True, slots=True)
class _Prepared:
    sql: str
    tenant_dir: str
    remote: bool


def read_only(sql: str) -> str:
    """The one SELECT in `sql`; raises `InvalidRequest` for anything else."""
    if len(sql) > MAX_SQL_CHARS:
        raise InvalidRequest(
            f"the query is over {MAX_SQL_CHARS} characters", code="InvalidQuery", field=SQL
        )
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise InvalidRequest(_first_line(exc), code="InvalidQuery", field=SQL) from None
    if len(statements) != 1:
        raise InvalidRequest(
            f"give exactly one SELECT statement, not {len(statements)}",
            code="InvalidQuery",
            field=SQL,
        )
    statement = statements[0]
    if statement.type != duckdb.StatementType.SELECT:
        raise InvalidRequest(
            f"only a SELECT is answered, not {statement.type.name.lower()}",
            code="NotReadOnly",
            field=SQL,
        )
    return str(statement.query)


class LakeQuery:
    """Answers a tenant's SQL over its own files under `root` (a directory or s3:// URL)."""

    def __init__(
        self,
        root: str,
        *,
        max_rows: int = MAX_ROWS,
        timeout: float = TIMEOUT_SECONDS,
        memory_limit: str = MEMORY_LIMIT,
    ) -> None:
        self.root = root.rstrip("/")
        self.max_rows = max_rows
        self.timeout = timeout
        self.memory_limit = memory_limit
        self._turns = asyncio.Semaphore(CONCURRENT)

    async def run(self, tenant: TenantName, sql: str) -> QueryResult:
        statement = read_only(sql)
        tenant_dir = f"{self.root}/tenant={tenant}/"
        prepared = _Prepared(statement, tenant_dir, is_remote(self.root))
        async with self._turns:
            return await asyncio.to_thread(self._answer, prepared)

    def _answer(self, prepared: _Prepared) -> QueryResult:
        pattern = prepared.tenant_dir + "*/*/*.parquet"
        any_file = not prepared.remote and any(Path(prepared.tenant_dir).glob("*/*/*.parquet"))
        config: dict[str, str | bool | int | float | list[str]] = {
            "threads": 1,
            "memory_limit": self.memory_limit,
            # No spilling: DuckDB would spill into ./.tmp and allow reading it, where another
            # tenant's query spills too.
            "temp_directory": "",
        }
        with duckdb.connect(config=config) as db:
            if prepared.remote:
                try:
                    configure_s3(db)
                    # Listed like a directory: a tenant without objects yet has an empty view.
                    listed = db.execute("SELECT 1 FROM glob(?) LIMIT 1", [pattern]).fetchone()
                except duckdb.Error as exc:
                    # The operator's to mend (the httpfs extension missing, the bucket out of
                    # reach), not the caller's.
                    raise Unavailable(
                        f"the lake on S3 cannot be read: {_first_line(exc)}", retry_after=60
                    ) from None
                any_file = listed is not None
            if any_file:
                source = f"read_parquet({_quoted(pattern)}, hive_partitioning = true)"
            else:  # no file yet: the same columns, no rows
                casts = ", ".join(f"NULL::{t} AS {n}" for n, t in COLUMNS.items())
                source = f"(SELECT {casts}, NULL::VARCHAR AS bus, NULL::DATE AS date LIMIT 0)"
            db.execute(f"CREATE VIEW events AS SELECT * FROM {source}")
            # The lake's times are UTC; zoned ones are shown in UTC too, whatever the server's
            # zone (set here, not in `config`: the time zone belongs to ICU, loaded by now).
            db.execute("SET TimeZone = 'UTC'")
            db.execute(f"SET allowed_directories = [{_quoted(prepared.tenant_dir)}]")
            db.execute("SET enable_external_access = false")
            db.execute("SET lock_configuration = true")
            timer = threading.Timer(self.timeout, db.interrupt)
            timer.start()
            try:
                relation = db.sql(prepared.sql)
                columns = list(relation.columns)
                types = [str(t) for t in relation.types]
                fetched = _readable(relation, columns, types).fetchmany(self.max_rows + 1)
            except duckdb.InterruptException:
                raise InvalidRequest(
                    f"the query ran longer than {self.timeout:g} s",
                    code="QueryTimedOut",
                    field=SQL,
                ) from None
            except duckdb.OutOfMemoryException:
                raise InvalidRequest(
                    f"the query needs more than {self.memory_limit} of memory: aggregate more,"
                    " or filter on bus or date",
                    code="QueryTooLarge",
                    field=SQL,
                ) from None
            except duckdb.PermissionException as exc:
                raise Forbidden(
                    f"a query reads the view `events` (the tenant's own files) only: "
                    f"{_first_line(exc)}",
                    code="QueryRefused",
                    field=SQL,
                ) from None
            except duckdb.Error as exc:
                raise InvalidRequest(_first_line(exc), code="InvalidQuery", field=SQL) from None
            finally:
                timer.cancel()
        truncated = len(fetched) > self.max_rows
        return QueryResult(
            columns=columns,
            types=types,
            rows=[[_plain(v) for v in r] for r in fetched[: self.max_rows]],
            truncated=truncated,
        )


_ZONED: Final = "WITH TIME ZONE"


def _readable(
    relation: duckdb.DuckDBPyRelation, columns: list[str], types: list[str]
) -> duckdb.DuckDBPyRelation:
    """The relation with zoned timestamps (even inside lists and structs) as text: DuckDB
    needs pytz to hand them to Python, and a query must not fail for how it is answered."""
    if not any(_ZONED in t for t in types):
        return relation
    parts = []
    for n, (name, kind) in enumerate(zip(columns, types, strict=True), 1):
        alias = '"' + name.replace('"', '""') + '"'
        parts.append(f"#{n}::VARCHAR AS {alias}" if _ZONED in kind else f"#{n} AS {alias}")
    return relation.project(", ".join(parts))


def _plain(value: Any) -> Any:
    """A DuckDB value as JSON can carry it: times in ISO 8601, decimals, UUIDs, intervals
    and blobs as text (a decimal as a float would lose digits)."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, datetime | date | dt_time):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0]

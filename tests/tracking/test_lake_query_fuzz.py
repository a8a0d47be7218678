"""Random SQL, well-formed or not, never makes `POST /v1/lake/query` fail: every answer is a 200
or a 4xx naming the problem. The statements are mostly SELECTs over the view built from pieces
(columns, functions, casts, filters, other files), now and then anything, so that many are
answered and many refused (the fixture checks both happened)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.conftest import RunningApp, app_running
from tests.polling import eventually
from tests.tracking.test_lake import lake_rows, save_lake_rule, send

from stellwerk.config import load_settings

pytestmark = pytest.mark.slow  # 80 queries, each a DuckDB of its own: 1.3-3.9 s here


@dataclass
class Fuzzed:
    app: RunningApp
    statuses: dict[int, int]


@pytest.fixture
async def fuzzed(tmp_path: Path) -> AsyncIterator[Fuzzed]:
    settings_ = load_settings({"data_dir": str(tmp_path / "data"), "tenant_request_rate": 0})
    async with app_running(settings_) as app:
        await save_lake_rule(app, roll_seconds=0.05)
        await send(
            app,
            [
                {
                    "id": f"e{n}",
                    "source": "shop",
                    "type": f"t{n % 3}",
                    "subject": f"u{n}",
                    "time": "2026-12-04T10:00:00Z",
                    "data": {"n": n, "tags": ["a", "b"]},
                }
                for n in range(20)
            ],
        )
        await eventually(lambda: lake_rows(app), accept=lambda r: len(r) == 20)
        fuzzed = Fuzzed(app, {})
        yield fuzzed
    # Not hollow: both kinds of answer came back.
    assert fuzzed.statuses.get(200, 0) >= 20, fuzzed.statuses
    assert sum(n for s, n in fuzzed.statuses.items() if 400 <= s < 500) >= 20, fuzzed.statuses


_columns = st.sampled_from(
    [
        "id",
        "source",
        "type",
        "subject",
        "time",
        "recordedtime",
        "position",
        "rule",
        "event",
        "tenant",
        "bus",
        "date",
        "nope",
        "*",
    ]
)
_expressions = st.one_of(
    _columns,
    _columns.map(lambda c: f"count({c})"),
    _columns.map(lambda c: f"{c}::INT"),
    _columns.map(lambda c: f"{c}::TIMESTAMPTZ"),
    _columns.map(lambda c: f"{c}::DECIMAL(18, 3)"),
    _columns.map(lambda c: f"{c}::UUID"),
    st.sampled_from(
        [
            "event->>'$.data.n'",
            "event->'$.data.tags'",
            "json_extract(event, '$.data')",
            "INTERVAL 3 DAY",
            "gen_random_uuid()",
            "'\\x00'::BLOB",
            "1/0",
            "[1, 2]",
            "{'a': 1}",
            "map([1], ['x'])",
            "current_setting('allowed_directories')",
            "NULL",
            "'nan'::DOUBLE",
            "2**1000",
            "repeat('x', 100)",
        ]
    ),
    st.text(max_size=12),
)
# Half of them plain columns, so that many statements are answered.
_expressions = _columns | _expressions
_sources = st.just("events") | st.sampled_from(
    [
        "events",
        "events e JOIN events f USING (id)",
        "range(30)",
        "nowhere",
        "read_parquet('/etc/passwd')",
        "read_csv('../../x.csv')",
        "'events'",
        "(SELECT * FROM events LIMIT 3)",
        "glob('*')",
    ]
)
FILTERS = [
    "",
    " WHERE date = DATE '2026-12-04'",
    " WHERE bus = 'default'",
    " WHERE position > 3",
    " WHERE event->>'$.type' = 't1'",
    " GROUP BY ALL",
    " ORDER BY 1",
    " LIMIT -1",
    " WHERE",
]
# The first five bind on the view.
_filters = st.sampled_from(FILTERS)


def sometimes(draw: st.DrawFn, one_in: int) -> bool:
    return draw(st.integers(1, one_in)) == one_in


@st.composite
def statements(draw: st.DrawFn) -> str:
    if sometimes(draw, 8):
        return draw(
            st.text(max_size=40)
            | st.sampled_from(
                [
                    "DROP VIEW events",
                    "CREATE TABLE x AS SELECT 1",
                    "PRAGMA version",
                    "INSTALL httpfs",
                    "SELECT 1; SELECT 2",
                    "",
                    ";",
                    "EXPLAIN SELECT 1",
                    "SET threads = 8",
                    "DETACH memory",
                    "CALL pragma_version()",
                ]
            )
        )
    if draw(st.booleans()):  # one that is answered: known columns, a filter that binds
        known = st.sampled_from(["id", "type", "event", "date", "bus", "time", "position"])
        chosen = draw(st.lists(known, min_size=1, max_size=4))
        where = draw(st.sampled_from(FILTERS[:5]))
        return f"SELECT {', '.join(chosen)} FROM events{where}"
    chosen = draw(st.lists(_expressions, min_size=1, max_size=4))
    return f"SELECT {', '.join(chosen)} FROM {draw(_sources)}{draw(_filters)}"


@settings(
    max_examples=80,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_no_random_sql_makes_the_lake_query_fail(fuzzed: Fuzzed, data: st.DataObject) -> None:
    sql = data.draw(statements())
    app = fuzzed.app
    answer = await app.client.post("/v1/lake/query", headers=app.admin, json={"sql": sql})
    fuzzed.statuses[answer.status_code] = fuzzed.statuses.get(answer.status_code, 0) + 1
    assert answer.status_code < 500, (sql, answer.text)
    body = answer.json()
    if answer.status_code == 200:
        assert len(body["rows"]) <= 10_000
        assert all(len(row) == len(body["columns"]) for row in body["rows"])
    else:
        assert body["error"]
        assert body["message"]

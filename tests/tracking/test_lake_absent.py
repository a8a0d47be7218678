"""Without DuckDB (the `lake` extra) the server starts with the lake off: its query answers 503
saying what to install, and a `lake` target is an unknown target type. The quick start installs
no extra, so this is what `make run` serves."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import app_running

from stellwerk.config import load_settings
from stellwerk.tracking import opened


async def test_without_duckdb_the_lake_is_off_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(opened, "lake_installed", lambda: False)
    settings = load_settings({"data_dir": str(tmp_path / "data")})
    async with app_running(settings) as app:
        answer = await app.client.post(
            "/v1/lake/query", json={"sql": "SELECT 1"}, headers=app.admin
        )
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"] == "LakeNotInstalled"
        assert "stellwerk[lake]" in answer.json()["message"]
        rule = {"pattern": {"source": ["x"]}, "targets": [{"id": "l", "type": "lake"}]}
        saved = await app.client.put(
            "/v1/buses/default/rules/to-lake", json=rule, headers=app.admin
        )
        assert saved.status_code == 422, saved.text
        assert saved.json()["field"] == "$.targets[0].type"

"""``stellwerk pattern test``: exit codes, @file arguments, explanations."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from stellwerk.cli.pattern import pattern


def test_exit_codes() -> None:
    runner = CliRunner()
    event = json.dumps({"type": "a", "n": 5})
    assert (
        runner.invoke(pattern, ["test", "--pattern", '{"type": ["a"]}', "--event", event]).exit_code
        == 0
    )
    assert (
        runner.invoke(pattern, ["test", "--pattern", '{"type": ["b"]}', "--event", event]).exit_code
        == 1
    )
    invalid = runner.invoke(pattern, ["test", "--pattern", '{"type": "a"}', "--event", event])
    assert invalid.exit_code == 2
    assert "must be an object or an array" in invalid.stderr


def test_files_and_explain(tmp_path: Path) -> None:
    pattern_file = tmp_path / "pattern.json"
    event_file = tmp_path / "event.json"
    pattern_file.write_text(json.dumps({"data": {"total": [{"numeric": [">", 100]}]}}))
    event_file.write_text(json.dumps({"data": {"total": 50}}))
    result = CliRunner().invoke(
        pattern, ["test", "--pattern", f"@{pattern_file}", "--event", f"@{event_file}", "--explain"]
    )
    assert result.exit_code == 1
    assert "data.total" in result.stdout
    assert "50" in result.stdout

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


def test_an_envelope_rule_s_pattern_is_tried_on_the_envelope() -> None:
    cloudevent = json.dumps({"specversion": "1.0", "id": "1", "source": "shop", "type": "Sale"})
    pattern_text = json.dumps({"detail-type": ["Sale"], "account": ["acme"]})
    runner = CliRunner()
    seen = ["test", "--pattern", pattern_text, "--event", cloudevent, "--view", "eventbridge"]
    assert runner.invoke(pattern, [*seen, "--account", "acme"]).exit_code == 0
    missed = runner.invoke(pattern, [*seen, "--explain"])
    assert missed.exit_code == 1
    assert "account" in missed.stdout
    assert "detail-type" not in missed.stdout
    not_an_object = runner.invoke(pattern, [*seen[:3], "--event", "[1]", "--view", "eventbridge"])
    assert not_an_object.exit_code == 2
    assert "a CloudEvent object" in not_an_object.stderr

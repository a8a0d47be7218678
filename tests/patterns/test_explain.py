"""Explanations say which field failed, what the pattern asked and what the event had."""

from __future__ import annotations

import json

from stellwerk.patterns import explain


def test_matching_event_has_no_mismatches() -> None:
    result = explain({"type": ["a"]}, {"type": "a"})
    assert result.matched
    assert result.clauses[0].mismatches == []


def test_names_field_condition_and_value() -> None:
    result = explain(
        {"type": ["a"], "data": {"n": [{"numeric": [">", 5]}], "gone": [{"exists": False}]}},
        {"type": "a", "data": {"n": 3, "gone": 1}},
    )
    assert not result.matched
    by_field = {m.field: m for m in result.clauses[0].mismatches}
    assert set(by_field) == {"data.n", "data.gone"}
    assert by_field["data.n"].found == [3]
    assert by_field["data.n"].condition == [{"numeric": [">", 5]}]
    assert "must not exist" in by_field["data.gone"].reason
    json.dumps(result.to_dict())


def test_missing_field_and_or_alternatives() -> None:
    result = explain({"$or": [{"a": ["1"]}, {"b": ["2"]}]}, {"b": "3"})
    assert not result.matched
    assert [m.field for c in result.clauses for m in c.mismatches] == ["a", "b"]
    assert result.clauses[0].mismatches[0].found is None
    assert "Alternative 2" in str(result)


def test_array_elements_that_do_not_line_up() -> None:
    result = explain({"a": {"b": ["x"], "c": ["y"]}}, {"a": [{"b": "x"}, {"c": "y"}]})
    assert not result.matched
    assert "different elements" in result.clauses[0].mismatches[0].reason

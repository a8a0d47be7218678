"""EventBridge's own answers (LocalStack's AWS-validated cases), for one pattern and the Matcher."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stellwerk.patterns import InvalidPatternError, Matcher, compile_pattern

CONFORMANCE = (
    Path(__file__).resolve().parents[2]
    / ".."
    / "shared"
    / "conformance"
    / "eventbridge-patterns.json"
)


def _cases() -> list[Any]:
    if not CONFORMANCE.exists():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"{CONFORMANCE} is absent"))]
    cases = json.loads(CONFORMANCE.read_text())
    return [pytest.param(case, id=case["name"]) for case in cases]


@pytest.mark.parametrize("case", _cases())
def test_single_pattern_agrees_with_eventbridge(case: dict[str, Any]) -> None:
    if case["expect"] == "invalid":
        with pytest.raises(InvalidPatternError):
            compile_pattern(case["pattern"])
        return
    assert compile_pattern(case["pattern"]).matches(case["event"]) == (case["expect"] == "match")


def test_matcher_with_every_case_loaded_agrees_with_eventbridge() -> None:
    if not CONFORMANCE.exists():
        pytest.skip(f"{CONFORMANCE} is absent")
    cases = json.loads(CONFORMANCE.read_text())
    matcher = Matcher()
    for case in cases:
        if case["expect"] != "invalid":
            matcher.add(case["name"], case["pattern"])
    for case in cases:
        if case["expect"] == "invalid":
            continue
        matched = matcher.match(json.dumps(case["event"]).encode())
        assert (case["name"] in matched) == (case["expect"] == "match"), case["name"]

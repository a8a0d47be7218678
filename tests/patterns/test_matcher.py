"""The Matcher: adding, replacing and removing rules, while matching goes on."""

from __future__ import annotations

import json
import threading

import pytest

from stellwerk.patterns import InvalidPatternError, Matcher

EVENT = {"type": "order.created", "source": "/shop", "data": {"total": 150, "country": "DE"}}


def test_matches_every_rule_that_applies_in_insertion_order() -> None:
    matcher = Matcher()
    matcher.add("big", {"data": {"total": [{"numeric": [">", 100]}]}})
    matcher.add("small", {"data": {"total": [{"numeric": ["<", 100]}]}})
    matcher.add("created", {"type": ["order.created"]})
    matcher.add("german", '{"data": {"country": ["DE", "AT"]}}')
    assert matcher.match(EVENT) == ["big", "created", "german"]
    assert matcher.match(json.dumps(EVENT).encode()) == ["big", "created", "german"]


def test_readding_a_name_replaces_the_rule_and_remove_forgets_it() -> None:
    matcher = Matcher()
    matcher.add("r", {"type": ["order.created"]})
    assert matcher.match(EVENT) == ["r"]
    matcher.add("r", {"type": ["order.deleted"]})
    assert matcher.match(EVENT) == []
    assert len(matcher) == 1
    matcher.add("r", {"type": ["order.created"]})
    matcher.remove("r")
    matcher.remove("never-added")
    assert matcher.match(EVENT) == []
    assert "r" not in matcher


def test_invalid_pattern_leaves_the_matcher_unchanged() -> None:
    matcher = Matcher()
    matcher.add("r", {"type": ["order.created"]})
    with pytest.raises(InvalidPatternError):
        matcher.add("r", {"type": "order.created"})
    assert matcher.match(EVENT) == ["r"]


def test_rules_sharing_operators_are_told_apart() -> None:
    matcher = Matcher()
    matcher.add("a", {"type": ["order.created"], "source": ["/shop"]})
    matcher.add("b", {"type": ["order.created"], "source": ["/billing"]})
    matcher.add("c", {"type": ["order.created", "x"], "data": {"country": [{"prefix": "D"}]}})
    assert matcher.match(EVENT) == ["a", "c"]


def test_adding_and_removing_while_matching_runs() -> None:
    matcher = Matcher()
    matcher.add("stable", {"type": ["order.created"]})
    stop = threading.Event()
    errors: list[BaseException] = []

    def churn() -> None:
        try:
            for number in range(300):
                matcher.add(f"tmp-{number}", {"data": {"total": [{"numeric": [">", number]}]}})
                if number % 2:
                    matcher.remove(f"tmp-{number - 1}")
        except BaseException as error:
            errors.append(error)
        finally:
            stop.set()

    worker = threading.Thread(target=churn)
    worker.start()
    while not stop.is_set():
        assert "stable" in matcher.match(EVENT)
    worker.join()
    assert errors == []
    assert matcher.match(EVENT)[0] == "stable"
    assert len(matcher) == 1 + 150

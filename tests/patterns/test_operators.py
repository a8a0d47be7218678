"""Our own cases for every operator and edge beyond the conformance data."""

from __future__ import annotations

from typing import Any

import pytest

from stellwerk.patterns import InvalidPatternError, Matcher, compile_pattern

CASES: list[tuple[str, dict[str, Any], dict[str, Any], bool]] = [
    ("array of objects", {"a": {"b": ["x"]}}, {"a": [{"b": "y"}, {"b": "x"}]}, True),
    (
        "fields from different array elements",
        {"a": {"b": ["x"], "c": ["y"]}},
        {"a": [{"b": "x"}, {"c": "y"}]},
        False,
    ),
    (
        "fields from the same array element",
        {"a": {"b": ["x"], "c": ["y"]}},
        {"a": [{"b": "z", "c": "y"}, {"b": "x", "c": "y"}]},
        True,
    ),
    (
        "fields from two different arrays",
        {"a": {"b": ["x"]}, "d": {"e": ["y"]}},
        {"a": [{"b": "q"}, {"b": "x"}], "d": [{"e": "y"}]},
        True,
    ),
    ("nested arrays", {"a": {"b": [3]}}, {"a": [[{"b": 1}], [{"b": 3}]]}, True),
    (
        "deep nesting",
        {"a": {"b": {"c": {"d": {"e": {"f": ["deep"]}}}}}},
        {"a": {"b": {"c": {"d": {"e": {"f": "deep"}}}}}},
        True,
    ),
    ("dotted key in pattern", {"a.b": ["x"]}, {"a": {"b": "x"}}, True),
    ("dotted key in event", {"a": {"b": ["x"]}}, {"a.b": "x"}, True),
    ("object is not a leaf", {"a": ["x"]}, {"a": {"b": "x"}}, False),
    ("unicode", {"name": ["Grüße 🚀"]}, {"name": "Grüße 🚀"}, True),
    ("unicode ignore case", {"name": [{"equals-ignore-case": "ÄRGER"}]}, {"name": "ärger"}, True),
    ("number as string is not a number", {"n": [5]}, {"n": "5"}, False),
    ("string as number is not a string", {"n": ["5"]}, {"n": 5}, False),
    ("int equals float", {"n": [5]}, {"n": 5.0}, True),
    ("number beyond six decimals", {"n": [1.0000001]}, {"n": 1.0}, True),
    ("big integer", {"n": [12345678901234567890]}, {"n": 12345678901234567890}, True),
    ("big integers differ", {"n": [12345678901234567890]}, {"n": 12345678901234567891}, False),
    ("numeric ignores numbers beyond 5e9", {"n": [{"numeric": [">", 0]}]}, {"n": 6e9}, False),
    ("numeric at upper limit", {"n": [{"numeric": ["<=", 5e9]}]}, {"n": 5e9}, True),
    ("numeric equals", {"n": [{"numeric": ["=", 3.018e2]}]}, {"n": 301.8}, True),
    ("numeric open bound", {"n": [{"numeric": [">", 0, "<", 5]}]}, {"n": 5}, False),
    ("numeric closed bound", {"n": [{"numeric": [">=", 0, "<=", 5]}]}, {"n": 5}, True),
    ("numeric ignores booleans", {"n": [{"numeric": [">", 0]}]}, {"n": True}, False),
    ("true is not 1", {"n": [True]}, {"n": 1}, False),
    ("false is false", {"n": [False]}, {"n": False}, True),
    ("null matches null", {"n": [None]}, {"n": None}, True),
    ("null is not missing", {"n": [None]}, {}, False),
    ("empty string", {"n": [""]}, {"n": ""}, True),
    ("exists true on null", {"n": [{"exists": True}]}, {"n": None}, True),
    ("exists false on empty array", {"n": [{"exists": False}]}, {"n": []}, True),
    (
        "exists true in array of objects",
        {"a": {"id": [{"exists": True}]}},
        {"a": [{"x": 1}, {"id": 2}]},
        True,
    ),
    ("prefix", {"s": [{"prefix": "ab"}]}, {"s": "abc"}, True),
    ("prefix on number", {"s": [{"prefix": "1"}]}, {"s": 12}, False),
    ("prefix ignore case", {"s": [{"prefix": {"equals-ignore-case": "AB"}}]}, {"s": "abc"}, True),
    ("suffix longer than value", {"s": [{"suffix": "xabc"}]}, {"s": "abc"}, False),
    (
        "suffix ignore case",
        {"s": [{"suffix": {"equals-ignore-case": ".PNG"}}]},
        {"s": "a.png"},
        True,
    ),
    ("wildcard", {"s": [{"wildcard": "a*c*e"}]}, {"s": "abcde"}, True),
    ("wildcard escaped star", {"s": [{"wildcard": "a\\*c"}]}, {"s": "abc"}, False),
    ("wildcard escaped star literal", {"s": [{"wildcard": "a\\*c"}]}, {"s": "a*c"}, True),
    ("wildcard escaped backslash", {"s": [{"wildcard": "a\\\\*"}]}, {"s": "a\\bc"}, True),
    ("cidr ipv4", {"ip": [{"cidr": "10.0.0.0/8"}]}, {"ip": "10.20.30.40"}, True),
    ("cidr ipv4 outside", {"ip": [{"cidr": "10.0.0.0/8"}]}, {"ip": "11.0.0.1"}, False),
    ("cidr ipv6 compressed", {"ip": [{"cidr": "2001:db8::/32"}]}, {"ip": "2001:db8::1"}, True),
    (
        "cidr ipv6 full form",
        {"ip": [{"cidr": "2001:db8::/32"}]},
        {"ip": "2001:0DB8:0000:0000:0000:0000:0000:0001"},
        True,
    ),
    ("cidr ipv6 outside", {"ip": [{"cidr": "2001:db8::/32"}]}, {"ip": "2001:db9::1"}, False),
    ("cidr version mismatch", {"ip": [{"cidr": "10.0.0.0/8"}]}, {"ip": "::1"}, False),
    ("anything-but on array", {"s": [{"anything-but": "a"}]}, {"s": ["a", "b"]}, True),
    ("anything-but on array of only excluded", {"s": [{"anything-but": "a"}]}, {"s": ["a"]}, False),
    ("anything-but number vs string", {"s": [{"anything-but": [1, 2]}]}, {"s": "1"}, True),
    (
        "anything-but ignore case",
        {"s": [{"anything-but": {"equals-ignore-case": "A"}}]},
        {"s": "a"},
        False,
    ),
    ("or", {"$or": [{"a": ["1"]}, {"b": ["2"]}]}, {"b": "2"}, True),
    (
        "nested or",
        {"a": ["x"], "$or": [{"b": ["1"]}, {"c": ["2"], "$or": [{"d": [1]}, {"e": [2]}]}]},
        {"a": "x", "c": "2", "e": 2},
        True,
    ),
    ("or keyword as field", {"$or": {"a": ["1"]}}, {"$or": {"a": "1"}}, True),
]


@pytest.mark.parametrize(
    ("pattern", "event", "expected"), [pytest.param(p, e, x, id=name) for name, p, e, x in CASES]
)
def test_operator(pattern: dict[str, Any], event: dict[str, Any], expected: bool) -> None:
    assert compile_pattern(pattern).matches(event) is expected
    matcher = Matcher()
    matcher.add("rule", pattern)
    assert (matcher.match(event) == ["rule"]) is expected


INVALID: list[tuple[str, Any, str]] = [
    ("not an object", [1], "must be a JSON object"),
    ("empty object", {"a": {}}, "Empty objects"),
    ("array in value list", {"a": [[1]]}, "Match value must be"),
    ("two keys in match", {"a": [{"prefix": "a", "suffix": "b"}]}, "Only one key"),
    ("consecutive stars", {"a": [{"wildcard": "a**b"}]}, "Consecutive wildcard"),
    ("bad escape", {"a": [{"wildcard": "a\\b"}]}, "Invalid escape"),
    ("numeric out of range", {"a": [{"numeric": [">", 6e9]}]}, "between"),
    ("numeric bottom above top", {"a": [{"numeric": [">", 5, "<", 1]}]}, "Bottom"),
    ("numeric bool", {"a": [{"numeric": [">", True]}]}, "must be numeric"),
    ("numeric unknown op", {"a": [{"numeric": ["!=", 1]}]}, "Unrecognized numeric"),
    ("exists not bool", {"a": [{"exists": "yes"}]}, "exists"),
    ("mixed anything-but", {"a": [{"anything-but": ["a", 1]}]}, "all strings or all numbers"),
    ("cidr mask too long", {"a": [{"cidr": "10.0.0.0/33"}]}, "mask bits"),
    ("too long", {"a": ["x" * 2100]}, "limit is 2048"),
    ("invalid json text", '{"a": [1', "not valid JSON"),
]


@pytest.mark.parametrize(
    ("pattern", "reason"), [pytest.param(p, r, id=name) for name, p, r in INVALID]
)
def test_invalid_pattern_names_the_problem(pattern: Any, reason: str) -> None:
    with pytest.raises(InvalidPatternError, match=reason):
        compile_pattern(pattern)


def test_reason_names_the_field() -> None:
    with pytest.raises(InvalidPatternError) as caught:
        compile_pattern({"detail": {"state": [{"prefix": 1}]}})
    assert caught.value.field == "detail.state"
    assert "detail.state" in str(caught.value)

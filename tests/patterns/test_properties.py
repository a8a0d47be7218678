"""Properties of the pattern language, checked on generated events and patterns."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from stellwerk.patterns import InvalidPatternError, Matcher, compile_pattern

keys = st.text(alphabet="abcdefgh-_", min_size=1, max_size=5)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(max_size=8),
)
events = st.recursive(
    st.dictionaries(keys, scalars, max_size=4),
    lambda inner: st.dictionaries(
        keys, st.one_of(scalars, inner, st.lists(scalars, min_size=1, max_size=3)), max_size=4
    ),
    max_leaves=12,
)


def _leaves(
    event: dict[str, Any], prefix: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], Any]]:
    found = []
    for key, value in event.items():
        if isinstance(value, dict):
            found += _leaves(value, (*prefix, key))
        elif isinstance(value, list):
            found += [((*prefix, key), item) for item in value]
        else:
            found.append(((*prefix, key), value))
    return found


def _nest(path: tuple[str, ...], condition: list[Any]) -> dict[str, Any]:
    pattern: dict[str, Any] = {path[-1]: condition}
    for key in reversed(path[:-1]):
        pattern = {key: pattern}
    return pattern


@settings(max_examples=200, deadline=None)
@given(events, st.data())
def test_rule_built_from_event_values_matches_it(
    event: dict[str, Any], data: st.DataObject
) -> None:
    leaves = [leaf for leaf in _leaves(event) if "." not in "".join(leaf[0])]
    if not leaves:
        return
    path, value = data.draw(st.sampled_from(leaves))
    pattern = _nest(path, [value])
    assert compile_pattern(pattern).matches(event)
    matcher = Matcher()
    matcher.add("r", pattern)
    assert matcher.match(event) == ["r"]


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=6), st.integers(-1000, 1000)), scalars)
def test_anything_but_never_matches_that_value(excluded: Any, other: Any) -> None:
    pattern = {"f": [{"anything-but": excluded}]}
    compiled = compile_pattern(pattern)
    assert not compiled.matches({"f": excluded})
    matcher = Matcher()
    matcher.add("r", pattern)
    assert matcher.match({"f": excluded}) == []
    expected = other != excluded or type(other) is bool or type(other) is not type(excluded)
    if isinstance(other, (int, float)) and isinstance(excluded, int) and type(other) is not bool:
        expected = round(other, 6) != excluded
    assert compiled.matches({"f": other}) is expected


conditions = st.one_of(
    st.lists(st.sampled_from(["a", "b", 1, 2, None]), min_size=1, max_size=2),
    st.builds(lambda v: [{"prefix": v}], st.sampled_from(["a", "b", ""])),
    st.builds(lambda v: [{"numeric": [">", v]}], st.integers(-2, 2)),
    st.builds(lambda v: [{"exists": v}], st.booleans()),
    st.builds(lambda v: [{"anything-but": v}], st.sampled_from(["a", 1])),
)
small_patterns = st.dictionaries(
    st.sampled_from(["x", "y", "z"]), conditions, min_size=1, max_size=2
)
small_events = st.dictionaries(
    st.sampled_from(["x", "y", "z"]),
    st.sampled_from(["a", "ab", "b", 1, 2, 3, None, True]),
    max_size=3,
)


@settings(max_examples=300, deadline=None)
@given(small_patterns, small_patterns, small_events)
def test_or_matches_exactly_when_either_side_does(
    left: dict[str, Any], right: dict[str, Any], event: dict[str, Any]
) -> None:
    either = compile_pattern(left).matches(event) or compile_pattern(right).matches(event)
    combined = {"$or": [left, right]}
    assert compile_pattern(combined).matches(event) is either
    matcher = Matcher()
    matcher.add("or", combined)
    assert (matcher.match(event) == ["or"]) is either


@settings(max_examples=300, deadline=None)
@given(st.lists(small_patterns, min_size=1, max_size=12), small_events)
def test_matcher_agrees_with_each_rule_alone(
    patterns: list[dict[str, Any]], event: dict[str, Any]
) -> None:
    matcher = Matcher()
    for number, pattern in enumerate(patterns):
        matcher.add(f"r{number}", pattern)
    expected = [f"r{n}" for n, p in enumerate(patterns) if compile_pattern(p).matches(event)]
    assert matcher.match(event) == expected


json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=12), inner, max_size=3)
    ),
    max_leaves=10,
)
operator_names = st.sampled_from(
    [
        "prefix",
        "suffix",
        "equals-ignore-case",
        "anything-but",
        "numeric",
        "exists",
        "cidr",
        "wildcard",
        "$or",
        "EXISTS",
    ]
)


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        json_values,
        st.dictionaries(st.text(max_size=5), json_values, max_size=3),
        st.dictionaries(
            keys,
            st.lists(
                st.dictionaries(operator_names, json_values, min_size=1, max_size=2), max_size=2
            ),
            max_size=2,
        ),
        st.text(max_size=40),
    )
)
def test_invalid_patterns_only_raise_invalid_pattern_error(pattern: Any) -> None:
    try:
        compiled = compile_pattern(pattern)
    except InvalidPatternError:
        return
    compiled.matches({"a": 1})

"""The Matcher's generated fast paths agree with each rule's CompiledPattern on awkward events.

The Matcher walks events with code generated per rule set, takes shortcuts (one lookup per value,
rounding skipped far from any bound, inline arrays of flat objects, a fast IPv4 reader) and falls
back to a generic walk for dotted keys, nested arrays and odd shapes. Each shortcut must give
exactly what the single-rule evaluation gives, so these tests draw events and rules that hit
every one of them and compare.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from stellwerk.patterns import InvalidPatternError, Matcher, compile_pattern
from stellwerk.patterns.codegen import ipv4

KEYS = ["a", "b", "c"]
STRINGS = [
    "",
    "x",
    "xy",
    "XY",
    "abc",
    "ABC",
    "a*b",
    "10.0.0.1",
    "10.0.1.255",
    "192.168.7.9",
    "01.2.3.4",
    "10.0.0",
    "::1",
    "2001:db8::7",
    "::ffff:10.0.0.1",
    "Straße",
]
NUMBERS = [0, 1, -1, 2, 2.5, 1.0000004, 0.9999996, 1.000001, 5_000_000_001, 10**20, 1e-7, -2.5]
scalars = st.one_of(
    st.sampled_from([*STRINGS, *NUMBERS, True, False, None]),
    st.integers(-3, 3),
    st.floats(-3, 3, allow_nan=False),
)
keys = st.sampled_from([*KEYS, "a.b", "b.c"])
flat_objects = st.dictionaries(keys, scalars, max_size=3)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(keys, inner, max_size=3),
        st.lists(flat_objects, max_size=3),
    ),
    max_leaves=10,
)
events = st.dictionaries(keys, values, max_size=4)

texts = st.sampled_from(["x", "X", "a", "ab", "AB", "10.", "c", "y"])
operators = st.one_of(
    scalars.filter(lambda value: not isinstance(value, float) or value == value),
    st.builds(lambda t: {"prefix": t}, texts),
    st.builds(lambda t: {"suffix": t}, texts),
    st.builds(lambda t: {"prefix": {"equals-ignore-case": t}}, texts),
    st.builds(lambda t: {"suffix": {"equals-ignore-case": t}}, texts),
    st.builds(lambda t: {"equals-ignore-case": t}, texts),
    st.builds(lambda t: {"wildcard": t}, st.sampled_from(["a*", "*b", "x*y", "*", "a\\*b"])),
    st.builds(lambda v: {"anything-but": v}, st.sampled_from(["x", "abc", 1, 2.5, ["x", "XY"]])),
    st.builds(lambda v: {"anything-but": {"prefix": v}}, texts),
    st.builds(lambda v: {"anything-but": {"suffix": v}}, texts),
    st.builds(lambda v: {"anything-but": {"equals-ignore-case": v}}, texts),
    st.builds(lambda v: {"anything-but": {"wildcard": v}}, st.sampled_from(["a*", "*y"])),
    st.builds(
        lambda op, bound: {"numeric": [op, bound]},
        st.sampled_from([">", ">=", "<", "<=", "="]),
        st.sampled_from([0, 1, 2.5, -1, 1.000001, 0.999999]),
    ),
    st.just({"numeric": [">", 0, "<=", 2.5]}),
    st.builds(lambda flag: {"exists": flag}, st.booleans()),
    st.builds(
        lambda cidr: {"cidr": cidr},
        st.sampled_from(["10.0.0.0/24", "10.0.0.0/8", "192.168.0.0/16", "2001:db8::/32", "::/0"]),
    ),
)
paths = st.lists(st.sampled_from(KEYS), min_size=1, max_size=3)


def _nest(path: list[str], condition: Any, into: dict[str, Any]) -> None:
    node = into
    for key in path[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            return
        node = child
    if path[-1] not in node:
        node[path[-1]] = condition


@st.composite
def patterns(draw: st.DrawFn) -> dict[str, Any]:
    pattern: dict[str, Any] = {}
    for _ in range(draw(st.integers(1, 3))):
        _nest(draw(paths), draw(st.lists(operators, min_size=1, max_size=3)), pattern)
    if draw(st.booleans()):
        pattern["$or"] = [
            {draw(st.sampled_from(KEYS)): draw(st.lists(operators, min_size=1, max_size=2))}
            for _ in range(2)
        ]
    return pattern


def _expected(rules: list[dict[str, Any]], event: dict[str, Any]) -> list[str]:
    return [f"r{n}" for n, rule in enumerate(rules) if compile_pattern(rule).matches(event)]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(patterns(), min_size=1, max_size=8), events)
def test_matcher_agrees_with_every_rule_alone(
    rules: list[dict[str, Any]], event: dict[str, Any]
) -> None:
    matcher = Matcher()
    try:
        for number, rule in enumerate(rules):
            matcher.add(f"r{number}", rule)
    except InvalidPatternError:
        assume(False)
    assert matcher.match(event) == _expected(rules, event)


array_events = st.fixed_dictionaries(
    {
        "a": st.lists(
            st.one_of(st.dictionaries(st.sampled_from(KEYS), scalars, max_size=3), scalars),
            max_size=4,
        ),
        "b": scalars,
    }
)


@st.composite
def array_patterns(draw: st.DrawFn) -> dict[str, Any]:
    """Fields of the objects in array "a" (and of "b"), so that "a" is walked inline."""
    fields = draw(st.dictionaries(st.sampled_from(KEYS), st.lists(operators, max_size=2)))
    pattern: dict[str, Any] = {"a": {key: ops for key, ops in fields.items() if ops}}
    if not pattern["a"]:
        pattern["a"] = {"a": [{"exists": True}]}
    if draw(st.booleans()):
        pattern["b"] = draw(st.lists(operators, min_size=1, max_size=2))
    return pattern


@settings(max_examples=300, deadline=None)
@given(st.lists(array_patterns(), min_size=1, max_size=6), array_events)
def test_arrays_of_flat_objects_take_fields_from_one_element(
    rules: list[dict[str, Any]], event: dict[str, Any]
) -> None:
    """The inline loop over arrays of objects, keys missing from some elements included."""
    matcher = Matcher()
    try:
        for number, rule in enumerate(rules):
            matcher.add(f"r{number}", rule)
    except InvalidPatternError:
        assume(False)
    assert matcher.match(event) == _expected(rules, event)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([0, 1, 2.5, -1, 1.000001, 1e-6, 4_999_999_999.5]),
    st.floats(-2e-6, 2e-6, allow_nan=False),
    st.sampled_from([">", ">=", "<", "<=", "="]),
)
def test_numbers_a_hair_from_a_bound_compare_after_rounding(
    bound: float, offset: float, op: str
) -> None:
    rules: list[dict[str, Any]] = [
        {"n": [{"numeric": [op, bound]}]},
        {"n": [bound]},
        {"n": [{"anything-but": bound}]},
    ]
    event = {"n": bound + offset}
    matcher = Matcher()
    for number, rule in enumerate(rules):
        matcher.add(f"r{number}", rule)
    assert matcher.match(event) == _expected(rules, event)


@given(st.text(alphabet="0123456789.:/ x\x00", max_size=18))
def test_fastipv4_reading_is_the_standard_one(text: str) -> None:
    try:
        expected: int | None = int(ipaddress.IPv4Address(text))
    except ValueError:
        expected = None
    assert ipv4(text) == expected


def test_many_rules_on_one_path_share_lookups_and_stay_exact() -> None:
    matcher = Matcher()
    rules: list[dict[str, Any]] = []
    for number in range(200):
        rule: dict[str, Any] = {
            "type": [f"t{number % 7}"],
            "data": {
                "total": [{"numeric": [">", number % 50, "<=", number % 50 + 25]}],
                "ip": [{"cidr": f"10.{number % 4}.0.0/16"}],
                "items": {"sku": [{"prefix": f"S{number % 3}"}], "n": [{"numeric": [">", 1]}]},
            },
        }
        rules.append(rule)
        matcher.add(f"r{number}", rule)
    for total in (0, 10, 10.0000001, 25, 49.5, 74.9999999):
        for ip in ("10.1.2.3", "10.3.0.0", "11.0.0.1", "::1"):
            event = {
                "type": f"t{int(total) % 7}",
                "data": {
                    "total": total,
                    "ip": ip,
                    "items": [{"sku": "S1x", "n": 1}, {"sku": "S2", "n": 2}, {"n": 3}],
                },
            }
            assert matcher.match(event) == _expected(rules, event)


inner_objects = st.lists(
    st.dictionaries(st.sampled_from(["c", "d"]), scalars, max_size=2), max_size=3
)
nested_events = st.one_of(
    st.fixed_dictionaries(
        {
            "a": st.lists(
                st.fixed_dictionaries({"b": inner_objects, "e": scalars}), min_size=1, max_size=3
            ),
        },
        optional={"a.b": inner_objects, "x": st.lists(inner_objects, max_size=2)},
    ),
    # A dotted key sends the whole event to the generic walk, with one array of objects.
    st.fixed_dictionaries({"a": st.fixed_dictionaries({"e": scalars}), "a.b": inner_objects}),
)


@st.composite
def nested_patterns(draw: st.DrawFn) -> dict[str, Any]:
    """Fields of objects in arrays inside arrays, where the generic walk and the exact
    same-element check of the Matcher take over."""
    fields = {
        "c": draw(st.lists(operators, max_size=2)),
        "d": draw(st.lists(operators, max_size=2)),
    }
    inner = {key: ops for key, ops in fields.items() if ops} or {"c": [{"exists": True}]}
    pattern: dict[str, Any] = {"a": {"b": inner}}
    if draw(st.booleans()):
        pattern["a"]["e"] = draw(st.lists(operators, min_size=1, max_size=2))
    if draw(st.booleans()):
        pattern["x"] = {"c": draw(st.lists(operators, min_size=1, max_size=2))}
    return pattern


@settings(max_examples=300, deadline=None)
@given(st.lists(nested_patterns(), min_size=1, max_size=5), nested_events)
def test_nested_arrays_and_dotted_keys_take_the_generic_walk_exactly(
    rules: list[dict[str, Any]], event: dict[str, Any]
) -> None:
    matcher = Matcher()
    try:
        for number, rule in enumerate(rules):
            matcher.add(f"r{number}", rule)
    except InvalidPatternError:
        assume(False)
    assert matcher.match(event) == _expected(rules, event)


def test_generic_walk_keeps_fields_of_one_array_element_together() -> None:
    """A dotted key sends the event to the generic walk; the same-element rule still holds."""
    rules: list[dict[str, Any]] = [
        {"a": {"b": {"c": [1], "d": [1]}}},  # c and d from different elements: no match
        {"a": {"b": {"c": [1], "d": [2]}}},  # both from the first element
        {"a": {"b": {"c": [2]}, "e": [1]}},
    ]
    for event in (
        {"a": {"e": 1}, "a.b": [{"c": 1, "d": 2}, {"c": 2, "d": 1}]},
        {"a": {"e": 1, "b": [{"c": 1, "d": 2}, {"c": 2, "d": 1}]}, "a.x": 0},
    ):
        matcher = Matcher()
        for number, rule in enumerate(rules):
            matcher.add(f"r{number}", rule)
        assert matcher.match(event) == ["r1", "r2"] == _expected(rules, event)

"""From a pattern's JSON to validated clauses, rejecting what EventBridge rejects and saying why.

The result is in disjunctive form: ``$or`` is multiplied out into clauses, and a clause is the
fields that must all match. Nested objects and dotted keys both become dotted paths, because
EventBridge joins field names with "." on both the pattern and the event side.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Hashable
from typing import Annotated, Any

import msgspec

from stellwerk.patterns.conditions import (
    ANYTHING_BUT_IGNORE_CASE,
    ANYTHING_BUT_PREFIX,
    ANYTHING_BUT_SUFFIX,
    ANYTHING_BUT_VALUES,
    ANYTHING_BUT_WILDCARD,
    NUMERIC_DECIMALS,
    NUMERIC_LIMIT,
    AnythingBut,
    Cidr,
    Clause,
    Equals,
    EqualsIgnoreCase,
    Exists,
    Field,
    Numeric,
    Operator,
    Prefix,
    Suffix,
    Wildcard,
    value_key,
)
from stellwerk.patterns.errors import InvalidPatternError
from stellwerk.patterns.wildcard import Token, check_complexity, to_regex, tokenize

# A pattern as the API's document shows it: a non-empty object. The language itself is `parse`'s
# to check (its error names what is wrong); JSON Schema would be a second grammar to keep in step.
PatternObject = Annotated[
    dict[str, Any],
    msgspec.Meta(
        extra_json_schema={
            "minProperties": 1,
            "description": "An EventBridge event pattern (docs/patterns.md).",
        }
    ),
]

MAX_PATTERN_CHARS = 2048
# Multiplying out nested $or can explode; EventBridge refuses such rules as too complex too.
MAX_CLAUSES = 1024
OPERATORS = frozenset(
    {
        "prefix",
        "suffix",
        "equals-ignore-case",
        "anything-but",
        "numeric",
        "exists",
        "cidr",
        "wildcard",
    }
)
_LOWER_BOUNDS = {">": False, ">=": True}
_UPPER_BOUNDS = {"<": False, "<=": True}


def load(pattern: dict[str, Any] | str | bytes) -> dict[str, Any]:
    """The pattern as a dict, checked for EventBridge's size limit on its JSON text."""
    if isinstance(pattern, (str, bytes)):
        text = pattern.decode() if isinstance(pattern, bytes) else pattern
        if len(text) > MAX_PATTERN_CHARS:
            raise InvalidPatternError(
                f"Event pattern is {len(text)} characters long; the limit is {MAX_PATTERN_CHARS}"
            )
        try:
            loaded = msgspec.json.decode(text)
        except msgspec.DecodeError as error:
            raise InvalidPatternError(f"Event pattern is not valid JSON: {error}") from None
    else:
        try:
            size = len(msgspec.json.encode(pattern).decode())
        except (TypeError, msgspec.EncodeError) as error:
            raise InvalidPatternError(f"Event pattern is not JSON: {error}") from None
        if size > MAX_PATTERN_CHARS:
            raise InvalidPatternError(
                f"Event pattern is {size} characters long as JSON; the limit is {MAX_PATTERN_CHARS}"
            )
        loaded = pattern
    if not isinstance(loaded, dict):
        raise InvalidPatternError("Event pattern must be a JSON object")
    return loaded


def parse(pattern: dict[str, Any] | str | bytes) -> list[Clause]:
    """Validate a pattern and return its clauses; raises InvalidPatternError."""
    return parse_loaded(load(pattern))


def parse_loaded(pattern: dict[str, Any]) -> list[Clause]:
    """The clauses of a pattern that ``load`` has already read and size-checked."""
    clauses = _parse_object(pattern, "")
    for clause in clauses:
        _check_wildcards(clause)
    return clauses


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _is_or(value: Any) -> bool:
    # event-ruler reads "$or" as an operator only in this exact shape; otherwise it is a field.
    return (
        isinstance(value, list)
        and len(value) >= 2
        and all(isinstance(item, dict) for item in value)
        and not any(key in OPERATORS for item in value for key in item)
    )


def _parse_object(obj: dict[str, Any], prefix: str) -> list[Clause]:
    if not obj:
        raise InvalidPatternError("Empty objects are not allowed", prefix or None)
    clauses: list[Clause] = [()]
    for key, value in obj.items():
        if not isinstance(key, str):
            raise InvalidPatternError("Field names must be strings", prefix or None)
        path = _join(prefix, key)
        if key == "$or" and _is_or(value):
            parts = [clause for item in value for clause in _parse_object(item, prefix)]
        elif isinstance(value, dict):
            parts = _parse_object(value, path)
        elif isinstance(value, list):
            if not value:
                raise InvalidPatternError("Empty arrays are not allowed", path)
            operators = tuple(_parse_value(item, path) for item in value)
            parts = [(Field(path, operators, value),)]
        else:
            raise InvalidPatternError(f'"{key}" must be an object or an array', path)
        clauses = [clause + part for clause in clauses for part in parts]
        if len(clauses) > MAX_CLAUSES:
            raise InvalidPatternError("Rule is too complex - too many $or combinations", path)
    return clauses


def _parse_value(item: Any, path: str) -> Operator:
    if item is None or isinstance(item, (str, bool, int, float)):
        if isinstance(item, float) and item != item:
            raise InvalidPatternError("Match value must be a finite number", path)
        return Equals(value_key(item), item)
    if isinstance(item, list):
        raise InvalidPatternError("Match value must be String, number, true, false, or null", path)
    if not isinstance(item, dict):
        raise InvalidPatternError(f"Unsupported match value {item!r}", path)
    if len(item) != 1:
        if not item:
            raise InvalidPatternError("Empty objects are not allowed", path)
        raise InvalidPatternError("Only one key allowed in match expression", path)
    ((name, arg),) = item.items()
    parser = _OPERATOR_PARSERS.get(name)
    if parser is None:
        raise InvalidPatternError(f"Unrecognized match type {name}", path)
    return parser(arg, path, item)


def _string_or_ignore_case(name: str, arg: Any, path: str) -> tuple[str, bool]:
    if isinstance(arg, str):
        return arg, False
    if isinstance(arg, dict) and len(arg) == 1 and isinstance(arg.get("equals-ignore-case"), str):
        return str(arg["equals-ignore-case"]), True
    raise InvalidPatternError(f"{name} match pattern must be a string", path)


def _prefix(arg: Any, path: str, source: Any) -> Operator:
    text, ignore_case = _string_or_ignore_case("prefix", arg, path)
    return Prefix(text.lower() if ignore_case else text, ignore_case, source)


def _suffix(arg: Any, path: str, source: Any) -> Operator:
    text, ignore_case = _string_or_ignore_case("suffix", arg, path)
    return Suffix(text.lower() if ignore_case else text, ignore_case, source)


def _equals_ignore_case(arg: Any, path: str, source: Any) -> Operator:
    if not isinstance(arg, str):
        raise InvalidPatternError("equals-ignore-case match pattern must be a string", path)
    return EqualsIgnoreCase(arg.lower(), source)


def _wildcard(arg: Any, path: str, source: Any) -> Operator:
    if not isinstance(arg, str):
        raise InvalidPatternError("wildcard match pattern must be a string", path)
    return Wildcard(arg, to_regex(tokenize(arg, path)), source)


def _exists(arg: Any, path: str, source: Any) -> Operator:
    if not isinstance(arg, bool):
        raise InvalidPatternError("exists match pattern must be either true or false.", path)
    return Exists(arg, source)


def _cidr(arg: Any, path: str, source: Any) -> Operator:
    if not isinstance(arg, str):
        raise InvalidPatternError("cidr match pattern must be a string", path)
    address, slash, mask = arg.partition("/")
    if not slash or "/" in mask:
        raise InvalidPatternError("Malformed CIDR, one '/' required", path)
    if not mask.isascii() or not mask.isdigit():
        raise InvalidPatternError("Malformed CIDR, mask bits must be an integer", path)
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise InvalidPatternError(f"Nonstandard IP address: {address}", path) from None
    bits = int(mask)
    if bits > ip.max_prefixlen:
        raise InvalidPatternError(f"Malformed CIDR, mask bits must be at most {ip.max_prefixlen}")
    return Cidr(ip.version, int(ip) >> (ip.max_prefixlen - bits), bits, source)


def _number(op: str, value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise InvalidPatternError(f"Value of {op} must be numeric", path)
    if not -NUMERIC_LIMIT <= value <= NUMERIC_LIMIT:
        raise InvalidPatternError(f"Value of {op} must be between -5.0E9 and 5.0E9", path)
    return round(float(value), NUMERIC_DECIMALS)


def _numeric(arg: Any, path: str, source: Any) -> Operator:
    if not isinstance(arg, list) or not arg:
        raise InvalidPatternError("Value of numeric must be an array.", path)
    first = arg[0]
    if first == "=":
        if len(arg) != 2:
            if len(arg) < 2:
                raise InvalidPatternError("Value of = must be numeric", path)
            raise InvalidPatternError("Too many terms in numeric range expression", path)
        number = _number("=", arg[1], path)
        return Numeric(number, True, number, True, source)
    lower: float | None = None
    upper: float | None = None
    lower_inclusive = upper_inclusive = False
    for index in range(0, len(arg), 2):
        op = arg[index]
        if not isinstance(op, str) or op not in (*_LOWER_BOUNDS, *_UPPER_BOUNDS, "="):
            raise InvalidPatternError(f"Unrecognized numeric range operator: {op}", path)
        if index >= 4:
            raise InvalidPatternError("Too many terms in numeric range expression", path)
        if index + 1 >= len(arg):
            raise InvalidPatternError(f"Value of {op} must be numeric", path)
        number = _number(op, arg[index + 1], path)
        if op in _LOWER_BOUNDS and index == 0:
            lower, lower_inclusive = number, _LOWER_BOUNDS[op]
        elif op in _UPPER_BOUNDS and upper is None:
            upper, upper_inclusive = number, _UPPER_BOUNDS[op]
        else:
            raise InvalidPatternError(f"Bad numeric range operator: {op}", path)
    if lower is not None and upper is not None and lower >= upper:
        raise InvalidPatternError("Bottom must be less than top", path)
    return Numeric(lower, lower_inclusive, upper, upper_inclusive, source)


def _string_list(name: str, arg: Any, path: str, *, allow_empty: bool) -> list[str]:
    items = arg if isinstance(arg, list) else [arg]
    if not items:
        raise InvalidPatternError("Empty arrays are not allowed", path)
    for item in items:
        if not isinstance(item, str):
            if name == ANYTHING_BUT_IGNORE_CASE:
                raise InvalidPatternError(
                    "Inside anything-but/equals-ignore-case list, "
                    "number|start|null|boolean is not supported.",
                    path,
                )
            raise InvalidPatternError(f"{name} match pattern must be a string", path)
        if not item and not allow_empty:
            raise InvalidPatternError("Null prefix/suffix not allowed", path)
    return list(items)


def _anything_but(arg: Any, path: str, source: Any) -> Operator:
    if isinstance(arg, dict):
        if len(arg) != 1:
            raise InvalidPatternError("Only one key allowed in anything-but expression", path)
        ((name, inner),) = arg.items()
        if name in (ANYTHING_BUT_PREFIX, ANYTHING_BUT_SUFFIX):
            texts = _string_list("prefix/suffix", inner, path, allow_empty=False)
            return AnythingBut(name, frozenset(texts), (), source)
        if name == ANYTHING_BUT_IGNORE_CASE:
            texts = _string_list(name, inner, path, allow_empty=True)
            return AnythingBut(name, frozenset(text.lower() for text in texts), (), source)
        if name == ANYTHING_BUT_WILDCARD:
            texts = _string_list(name, inner, path, allow_empty=True)
            regexes = tuple(to_regex(tokenize(text, path)) for text in texts)
            return AnythingBut(name, frozenset(texts), regexes, source)
        raise InvalidPatternError(f"Unsupported anything-but pattern: {name}", path)
    if isinstance(arg, list):
        if not arg:
            raise InvalidPatternError("Empty arrays are not allowed", path)
        keys: set[Hashable] = set()
        kinds: set[type] = set()
        for item in arg:
            if item is None or isinstance(item, (bool, dict, list)):
                raise InvalidPatternError(
                    "Inside anything but list, start|null|boolean is not supported.", path
                )
            kinds.add(str if isinstance(item, str) else float)
            keys.add(value_key(item))
        if len(kinds) > 1:
            raise InvalidPatternError(
                "Inside anything but list, values must be all strings or all numbers", path
            )
        return AnythingBut(ANYTHING_BUT_VALUES, frozenset(keys), (), source)
    if isinstance(arg, str) or (isinstance(arg, (int, float)) and not isinstance(arg, bool)):
        return AnythingBut(ANYTHING_BUT_VALUES, frozenset({value_key(arg)}), (), source)
    raise InvalidPatternError(
        "Value of anything-but must be an array or single string/number value.", path
    )


_OPERATOR_PARSERS = {
    "prefix": _prefix,
    "suffix": _suffix,
    "equals-ignore-case": _equals_ignore_case,
    "wildcard": _wildcard,
    "exists": _exists,
    "cidr": _cidr,
    "numeric": _numeric,
    "anything-but": _anything_but,
}


def _check_wildcards(clause: Clause) -> None:
    by_path: dict[str, list[list[Token]]] = {}
    for field in clause:
        for op in field.operators:
            texts: list[str] = []
            if isinstance(op, Wildcard):
                texts = [op.text]
            elif isinstance(op, AnythingBut) and op.kind == ANYTHING_BUT_WILDCARD:
                texts = sorted(str(item) for item in op.items)
            for text in texts:
                by_path.setdefault(field.path, []).append(tokenize(text, field.path))
    for path, patterns in by_path.items():
        check_complexity(patterns, path)

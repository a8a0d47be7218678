"""The comparison operators of a pattern, each one a small immutable test of one event value.

A pattern is compiled into *clauses* (alternatives produced by ``$or``); a clause is a tuple of
*fields* that must all match; a field is a path plus the operators listed for it, any of which may
match. Operators are hashable and compare by meaning, so the multi-rule matcher can evaluate an
operator that many rules share once per event.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

# EventBridge compares numbers between -5.0e9 and 5.0e9 with six decimal places; outside that
# range a number only equals itself.
NUMERIC_LIMIT = 5_000_000_000
NUMERIC_DECIMALS = 6


class _JsonLiteral:
    """Stands for JSON ``true``/``false`` in value keys, which Python would confuse with 1 and 0."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


TRUE_KEY = _JsonLiteral("true")
FALSE_KEY = _JsonLiteral("false")


def number_key(number: float) -> float:
    """The value by which two JSON numbers are equal, as EventBridge rounds them."""
    if -NUMERIC_LIMIT <= number <= NUMERIC_LIMIT:
        return round(number, NUMERIC_DECIMALS)
    return number


def value_key(value: Any) -> Hashable:
    """A key that is equal for two JSON scalars exactly when EventBridge treats them as equal."""
    kind = type(value)
    if kind is str or value is None:
        return value  # type: ignore[no-any-return]
    if kind is bool:
        return TRUE_KEY if value else FALSE_KEY
    if kind is int or kind is float:
        return number_key(value)
    raise TypeError(f"not a JSON scalar: {value!r}")


def comparable_number(value: Any) -> float | None:
    """The number a numeric comparison sees, or None when the value takes no part in one."""
    kind = type(value)
    if (kind is int or kind is float) and -NUMERIC_LIMIT <= value <= NUMERIC_LIMIT:
        return round(value, NUMERIC_DECIMALS)  # type: ignore[no-any-return]
    return None


class Operator:
    """One comparison against one event value. ``source`` is the pattern text it came from."""

    __slots__ = ()

    source: Any

    def matches(self, value: Any) -> bool:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Equals(Operator):
    key: Hashable
    source: Any = field(compare=False, default=None)

    def matches(self, value: Any) -> bool:
        return bool(value_key(value) == self.key)


@dataclass(frozen=True, slots=True)
class EqualsIgnoreCase(Operator):
    lowered: str
    source: Any = field(compare=False, default=None)

    def matches(self, value: Any) -> bool:
        return type(value) is str and value.lower() == self.lowered


@dataclass(frozen=True, slots=True)
class Prefix(Operator):
    text: str
    ignore_case: bool = False
    source: Any = field(compare=False, default=None)

    def matches(self, value: Any) -> bool:
        if type(value) is not str:
            return False
        return (value.lower() if self.ignore_case else value).startswith(self.text)


@dataclass(frozen=True, slots=True)
class Suffix(Operator):
    text: str
    ignore_case: bool = False
    source: Any = field(compare=False, default=None)

    def matches(self, value: Any) -> bool:
        if type(value) is not str:
            return False
        return (value.lower() if self.ignore_case else value).endswith(self.text)


@dataclass(frozen=True, slots=True)
class Wildcard(Operator):
    text: str
    regex: re.Pattern[str] = field(compare=False, repr=False, default=re.compile(""))
    source: Any = field(compare=False, default=None)

    def matches(self, value: Any) -> bool:
        return type(value) is str and self.regex.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class Numeric(Operator):
    """A range; ``None`` bounds are open-ended, ``=`` is a range with equal inclusive bounds."""

    lower: float | None
    lower_inclusive: bool
    upper: float | None
    upper_inclusive: bool
    source: Any = field(compare=False, default=None)

    def matches(self, value: Any) -> bool:
        number = comparable_number(value)
        if number is None or type(value) is bool:
            return False
        if self.lower is not None and (
            number < self.lower or (number == self.lower and not self.lower_inclusive)
        ):
            return False
        return self.upper is None or not (
            number > self.upper or (number == self.upper and not self.upper_inclusive)
        )


@dataclass(frozen=True, slots=True)
class Exists(Operator):
    """``exists: true`` matches any leaf value; ``exists: false`` matches only an absent field."""

    present: bool
    source: Any = field(compare=False, default=None)

    def matches(self, value: Any) -> bool:
        return self.present


@dataclass(frozen=True, slots=True)
class Cidr(Operator):
    version: int
    network: int
    prefix_length: int
    source: Any = field(compare=False, default=None)

    def matches(self, value: Any) -> bool:
        address = parse_ip(value)
        if address is None or address.version != self.version:
            return False
        shift = address.max_prefixlen - self.prefix_length
        return int(address) >> shift == self.network


def parse_ip(value: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address in an event string, or None for anything that is not a standard IP address."""
    if type(value) is not str or not value:
        return None
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


# The kinds of anything-but, by the operator they negate.
ANYTHING_BUT_VALUES = "values"
ANYTHING_BUT_PREFIX = "prefix"
ANYTHING_BUT_SUFFIX = "suffix"
ANYTHING_BUT_IGNORE_CASE = "equals-ignore-case"
ANYTHING_BUT_WILDCARD = "wildcard"


@dataclass(frozen=True, slots=True)
class AnythingBut(Operator):
    """Matches any leaf value (``null`` included) that the negated operator does not match."""

    kind: str
    items: frozenset[Hashable]
    regexes: tuple[re.Pattern[str], ...] = field(compare=False, repr=False, default=())
    source: Any = field(compare=False, default=None)

    def matches(self, value: Any) -> bool:
        if self.kind == ANYTHING_BUT_VALUES:
            return value_key(value) not in self.items
        if type(value) is not str:
            return True
        if self.kind == ANYTHING_BUT_PREFIX:
            return not any(value.startswith(str(item)) for item in self.items)
        if self.kind == ANYTHING_BUT_SUFFIX:
            return not any(value.endswith(str(item)) for item in self.items)
        if self.kind == ANYTHING_BUT_IGNORE_CASE:
            return value.lower() not in self.items
        return not any(regex.fullmatch(value) for regex in self.regexes)


@dataclass(frozen=True, slots=True)
class Field:
    """A path and its operators: the field matches when any operator matches any of its values."""

    path: str
    operators: tuple[Operator, ...]
    source: Any = field(compare=False, default=None)

    @property
    def matches_absent(self) -> bool:
        return any(isinstance(op, Exists) and not op.present for op in self.operators)

    def matches(self, value: Any) -> bool:
        return any(op.matches(value) for op in self.operators)


Clause = tuple[Field, ...]

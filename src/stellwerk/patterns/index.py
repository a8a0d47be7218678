"""The per-path index of the multi-rule matcher: every distinct operator on a path, evaluated in
one pass over the path's values with dictionary lookups instead of one test per rule.

Exact values, case-folded values, prefixes and suffixes (by length) and CIDR networks (by prefix
length) are dictionary lookups; numeric ranges are a binary search over the segments between all
range bounds on the path; anything-but is "all of them, minus those a lookup excludes".
"""

from __future__ import annotations

import ipaddress
import re
from bisect import bisect_left
from collections.abc import Callable, Collection, Hashable
from typing import Any

from stellwerk.patterns.conditions import (
    ANYTHING_BUT_IGNORE_CASE,
    ANYTHING_BUT_PREFIX,
    ANYTHING_BUT_SUFFIX,
    ANYTHING_BUT_VALUES,
    FALSE_KEY,
    NUMERIC_DECIMALS,
    NUMERIC_LIMIT,
    TRUE_KEY,
    AnythingBut,
    Cidr,
    Equals,
    EqualsIgnoreCase,
    Exists,
    Numeric,
    Operator,
    Prefix,
    Suffix,
    Wildcard,
)

Ids = tuple[int, ...]
_ByLength = dict[int, dict[str, list[int]]]


def _by_length(table: _ByLength, text: str, tid: int) -> None:
    table.setdefault(len(text), {}).setdefault(text, []).append(tid)


def _freeze(table: _ByLength) -> tuple[tuple[int, dict[str, Ids]], ...]:
    return tuple(
        (length, {text: tuple(ids) for text, ids in entries.items()})
        for length, entries in sorted(table.items())
    )


def _in_range(op: Numeric, number: float) -> bool:
    if op.lower is not None and (
        number < op.lower or (number == op.lower and not op.lower_inclusive)
    ):
        return False
    return op.upper is None or not (
        number > op.upper or (number == op.upper and not op.upper_inclusive)
    )


class PathIndex:
    """All operators that rules place on one path, each known by its operator id (tid)."""

    def __init__(self) -> None:
        self.exact: dict[Hashable, list[int]] = {}
        self.ignore_case: dict[str, list[int]] = {}
        self._prefix: _ByLength = {}
        self._prefix_ci: _ByLength = {}
        self._suffix: _ByLength = {}
        self._suffix_ci: _ByLength = {}
        self._numeric: list[tuple[Numeric, int]] = []
        self._cidr: dict[tuple[int, int], dict[int, list[int]]] = {}
        self.wildcards: list[tuple[re.Pattern[str], int]] = []
        self.present: list[int] = []
        self.absent: list[int] = []
        self._but_all: list[int] = []
        self.but_values: dict[Hashable, list[int]] = {}
        self.but_ignore_case: dict[str, list[int]] = {}
        self._but_prefix: _ByLength = {}
        self._but_suffix: _ByLength = {}
        self.but_wildcards: list[tuple[re.Pattern[str], int]] = []

    def add(self, op: Operator, tid: int) -> None:
        if isinstance(op, Equals):
            self.exact.setdefault(op.key, []).append(tid)
        elif isinstance(op, EqualsIgnoreCase):
            self.ignore_case.setdefault(op.lowered, []).append(tid)
        elif isinstance(op, Prefix):
            _by_length(self._prefix_ci if op.ignore_case else self._prefix, op.text, tid)
        elif isinstance(op, Suffix):
            _by_length(self._suffix_ci if op.ignore_case else self._suffix, op.text, tid)
        elif isinstance(op, Wildcard):
            self.wildcards.append((op.regex, tid))
        elif isinstance(op, Numeric):
            self._numeric.append((op, tid))
        elif isinstance(op, Exists):
            (self.present if op.present else self.absent).append(tid)
        elif isinstance(op, Cidr):
            table = self._cidr.setdefault((op.version, op.prefix_length), {})
            table.setdefault(op.network, []).append(tid)
        elif isinstance(op, AnythingBut):
            self._add_anything_but(op, tid)
        else:  # pragma: no cover - every operator class is handled above
            raise TypeError(f"unknown operator {op!r}")

    def _add_anything_but(self, op: AnythingBut, tid: int) -> None:
        self._but_all.append(tid)
        if op.kind == ANYTHING_BUT_VALUES:
            for key in op.items:
                self.but_values.setdefault(key, []).append(tid)
        elif op.kind == ANYTHING_BUT_IGNORE_CASE:
            for text in op.items:
                self.but_ignore_case.setdefault(str(text), []).append(tid)
        elif op.kind in (ANYTHING_BUT_PREFIX, ANYTHING_BUT_SUFFIX):
            table = self._but_prefix if op.kind == ANYTHING_BUT_PREFIX else self._but_suffix
            for text in op.items:
                _by_length(table, str(text), tid)
        else:
            self.but_wildcards.extend((regex, tid) for regex in op.regexes)

    def freeze(self) -> None:
        """Turn the build-time lists into the lookup structures that ``evaluate`` reads."""
        self.prefixes = _freeze(self._prefix)
        self.prefixes_ci = _freeze(self._prefix_ci)
        self.suffixes = _freeze(self._suffix)
        self.suffixes_ci = _freeze(self._suffix_ci)
        self.but_prefixes = _freeze(self._but_prefix)
        self.but_suffixes = _freeze(self._but_suffix)
        self.but_all = frozenset(self._but_all)
        self.cidrs = tuple(
            (version, length, {net: tuple(ids) for net, ids in table.items()})
            for (version, length), table in self._cidr.items()
        )
        bounds = sorted(
            {b for op, _ in self._numeric for b in (op.lower, op.upper) if b is not None}
        )
        self.bounds = bounds
        # Segment 2i is the open interval below bounds[i], 2i+1 the point bounds[i] itself.
        samples: list[float] = []
        for index, bound in enumerate(bounds):
            below = bounds[index - 1] if index else bound - 1.0
            samples += [(below + bound) / 2, bound]
        samples.append(bounds[-1] + 1.0 if bounds else 0.0)
        self.segments: tuple[Ids, ...] = tuple(
            tuple(tid for op, tid in self._numeric if _in_range(op, sample)) for sample in samples
        )
        self.has_numeric = bool(self._numeric)
        self.has_ignore_case = bool(self.ignore_case or self.prefixes_ci or self.suffixes_ci)
        self.has_string_ops = bool(
            self.has_ignore_case or self.prefixes or self.suffixes or self.wildcards or self.cidrs
        )

    def evaluator(self) -> Callable[[Any, set[int]], None]:
        """The fastest function that adds to ``hit`` the operators one value satisfies."""
        if self.has_string_ops or self.has_numeric or self.but_all or self.present:
            return self.evaluate
        exact = self.exact

        def exact_only(value: Any, hit: set[int]) -> None:
            kind = type(value)
            if kind is str:
                ids = exact.get(value)
            elif kind is bool:
                ids = exact.get(TRUE_KEY if value else FALSE_KEY)
            elif kind is int or kind is float:
                in_range = -NUMERIC_LIMIT <= value <= NUMERIC_LIMIT
                ids = exact.get(round(value, NUMERIC_DECIMALS) if in_range else value)
            else:
                ids = exact.get(value)
            if ids:
                hit.update(ids)

        return exact_only

    def evaluate(self, value: Any, hit: set[int]) -> None:
        """Add to ``hit`` the id of every operator that this value satisfies."""
        if self.present:
            hit.update(self.present)
        exact = self.exact
        kind = type(value)
        if kind is str:
            if exact:
                ids = exact.get(value)
                if ids:
                    hit.update(ids)
            if self.has_string_ops:
                self._strings(value, hit)
        elif kind is int or kind is float:
            if -NUMERIC_LIMIT <= value <= NUMERIC_LIMIT:
                number = round(value, NUMERIC_DECIMALS)
                if self.has_numeric:
                    bounds = self.bounds
                    at = bisect_left(bounds, number)
                    segment = 2 * at + 1 if at < len(bounds) and bounds[at] == number else 2 * at
                    hit.update(self.segments[segment])
            else:
                number = value
            if exact:
                ids = exact.get(number)
                if ids:
                    hit.update(ids)
        elif exact:
            ids = exact.get(TRUE_KEY if value is True else FALSE_KEY if value is False else None)
            if ids:
                hit.update(ids)
        if self.but_all:
            excluded = self._excluded(value)
            hit.update(self.but_all - excluded if excluded else self.but_all)

    def hits(self, values: list[Any]) -> set[int]:
        """The operators that these values satisfy."""
        found: set[int] = set()
        for value in values:
            self.evaluate(value, found)
        return found

    def _strings(self, value: str, hit: set[int]) -> None:
        ids: Collection[int] | None
        for length, table in self.prefixes:
            ids = table.get(value[:length])
            if ids:
                hit.update(ids)
        size = len(value)
        for length, table in self.suffixes:
            if length > size:
                break
            ids = table.get(value[size - length :])
            if ids:
                hit.update(ids)
        if self.has_ignore_case:
            lowered = value.lower()
            ids = self.ignore_case.get(lowered)
            if ids:
                hit.update(ids)
            for length, table in self.prefixes_ci:
                ids = table.get(lowered[:length])
                if ids:
                    hit.update(ids)
            size = len(lowered)
            for length, table in self.suffixes_ci:
                if length > size:
                    break
                ids = table.get(lowered[size - length :])
                if ids:
                    hit.update(ids)
        for regex, tid in self.wildcards:
            if regex.fullmatch(value):
                hit.add(tid)
        if self.cidrs:
            self._networks(value, hit)

    def _networks(self, value: str, hit: set[int]) -> None:
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            return
        number = int(address)
        for version, length, table in self.cidrs:
            if version == address.version:
                ids = table.get(number >> (address.max_prefixlen - length))
                if ids:
                    hit.update(ids)

    def _excluded(self, value: Any) -> set[int]:
        excluded: set[int] = set()
        ids: Collection[int] | None
        kind = type(value)
        if kind is bool:
            key: Hashable = TRUE_KEY if value else FALSE_KEY
        elif kind is int or kind is float:
            key = (
                round(value, NUMERIC_DECIMALS)
                if -NUMERIC_LIMIT <= value <= NUMERIC_LIMIT
                else value
            )
        else:
            key = value
        ids = self.but_values.get(key)
        if ids:
            excluded.update(ids)
        if kind is not str:
            return excluded
        for length, table in self.but_prefixes:
            ids = table.get(value[:length])
            if ids:
                excluded.update(ids)
        size = len(value)
        for length, table in self.but_suffixes:
            if length > size:
                break
            ids = table.get(value[size - length :])
            if ids:
                excluded.update(ids)
        if self.but_ignore_case:
            ids = self.but_ignore_case.get(value.lower())
            if ids:
                excluded.update(ids)
        for regex, tid in self.but_wildcards:
            if regex.fullmatch(value):
                excluded.add(tid)
        return excluded

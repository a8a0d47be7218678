"""The operators that all rules place on one field of the event, indexed by what they look up.

The multi-rule matcher keeps one bit per clause. Evaluating one event value against a *slot* (the
fields of a path, at most one per clause) yields a *clause mask*: every clause that this value does
not rule out, that is the clauses with no field here plus those whose field the value satisfies.
The masks of every operator are folded into lookup tables when the rules change, so one value costs
a few dictionary lookups however many rules there are: exact and case-folded values, prefixes and
suffixes by length, CIDR networks by prefix length, and numeric ranges by a binary search over the
segments between all range bounds. ``anything-but`` is "all of them, minus those a lookup excludes".
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Hashable
from typing import Any

from stellwerk.patterns.conditions import (
    ANYTHING_BUT_IGNORE_CASE,
    ANYTHING_BUT_PREFIX,
    ANYTHING_BUT_SUFFIX,
    ANYTHING_BUT_VALUES,
    AnythingBut,
    Cidr,
    Equals,
    EqualsIgnoreCase,
    Exists,
    Field,
    Numeric,
    Operator,
    Prefix,
    Suffix,
    Wildcard,
)
from stellwerk.patterns.wildcard import STAR, tokenize

Table = dict[str, int]


def _or(table: dict[Any, int], key: Any, mask: int) -> None:
    table[key] = table.get(key, 0) | mask


class SlotIndex:
    """Every operator that clauses place on one path, as clause masks.

    A clause has at most one field in a slot; a clause naming a path twice (possible through
    ``$or`` or dotted keys) uses a second slot of that path.
    """

    def __init__(self, number: int, path: str) -> None:
        self.number = number
        self.path = path
        self.ref = 0  # clauses with a field in this slot
        self.absent = 0  # clauses whose field is satisfied when the path is absent
        self.present = 0  # clauses satisfied by any leaf value (exists: true)
        self.ops: dict[Operator, int] = {}  # every operator, for the reference evaluation
        self.exact: dict[Hashable, int] = {}
        self.ignore_case: Table = {}
        self.prefix: dict[tuple[int, bool], Table] = {}
        self.suffix: dict[tuple[int, bool], Table] = {}
        self.numeric: dict[Numeric, int] = {}
        self.wildcard: dict[Wildcard, int] = {}
        self.cidr: dict[tuple[int, int], dict[int, int]] = {}
        self.but: dict[AnythingBut, int] = {}
        # Operators evaluated one by one: anything-but in a field with several of them, since
        # "all minus the excluded" is only right when a clause has one anything-but here.
        self.residual: dict[Operator, int] = {}

    def add(self, field: Field, bit: int) -> None:
        mask = 1 << bit
        self.ref |= mask
        if field.matches_absent:
            self.absent |= mask
        several_buts = sum(isinstance(op, AnythingBut) for op in field.operators) > 1
        for op in field.operators:
            _or(self.ops, op, mask)
            if isinstance(op, Equals):
                _or(self.exact, op.key, mask)
            elif isinstance(op, EqualsIgnoreCase):
                _or(self.ignore_case, op.lowered, mask)
            elif isinstance(op, Prefix):
                _or(self.prefix.setdefault((len(op.text), op.ignore_case), {}), op.text, mask)
            elif isinstance(op, Suffix):
                _or(self.suffix.setdefault((len(op.text), op.ignore_case), {}), op.text, mask)
            elif isinstance(op, Numeric):
                _or(self.numeric, op, mask)
            elif isinstance(op, Exists):
                if op.present:
                    self.present |= mask
            elif isinstance(op, Wildcard):
                self._add_wildcard(op, mask)
            elif isinstance(op, Cidr):
                _or(self.cidr.setdefault((op.version, op.prefix_length), {}), op.network, mask)
            elif isinstance(op, AnythingBut) and not several_buts:
                _or(self.but, op, mask)
            else:
                _or(self.residual, op, mask)

    def _add_wildcard(self, op: Wildcard, mask: int) -> None:
        """Wildcards with one star at an end are prefixes or suffixes, without one exact strings:
        a lookup instead of a regular expression."""
        tokens = tokenize(op.text, self.path)
        stars = sum(token is STAR for token in tokens)
        literal = "".join(token for token in tokens if token is not STAR)
        if stars == 0:
            _or(self.exact, literal, mask)
        elif stars == 1 and tokens[-1] is STAR:
            _or(self.prefix.setdefault((len(literal), False), {}), literal, mask)
        elif stars == 1 and tokens[0] is STAR:
            _or(self.suffix.setdefault((len(literal), False), {}), literal, mask)
        else:
            _or(self.wildcard, op, mask)

    @property
    def exact_strings_only(self) -> bool:
        """True when one dictionary lookup of a string value says everything."""
        return (
            all(type(key) is str for key in self.exact)
            and len(self.ops) == len(self.exact)
            and not self.present
        )

    @property
    def compares_numbers(self) -> bool:
        """Whether an operator here names a number (numeric ranges, exact or excluded ones)."""
        return (
            bool(self.numeric)
            or any(type(key) in (int, float) for key in self.exact)
            or any(
                op.kind == ANYTHING_BUT_VALUES
                and any(type(key) in (int, float) for key in op.items)
                for op in self.but
            )
        )

    def reference(self, value: Any, notref: int) -> int:
        """The clause mask of one value by asking each operator: slow, but exact for any value."""
        mask = notref
        for op, clauses in self.ops.items():
            if op.matches(value):
                mask |= clauses
        return mask

    def segments(
        self, points: list[float], base: int, but_all: int, excluded: dict[Hashable, int]
    ) -> list[int]:
        """The mask of each segment that ``points`` (sorted) cut the number line into.

        ``points`` are all numbers that operators here name. Segment 2i is the open interval
        below points[i], 2i+1 the point itself, the last one lies above every point. Exact
        values and anything-but exclusions only ever hit points, so they are folded in too.
        """
        masks = [base | but_all] * (2 * len(points) + 1)
        for index, point in enumerate(points):
            at = 2 * index + 1
            masks[at] = base | self.exact.get(point, 0) | (but_all & ~excluded.get(point, 0))
        # Open-ended ranges (the usual "> x", "< x") are summed up as running ORs from either
        # end, so that building stays linear in the number of rules; bounded ones are few.
        from_start = [0] * len(masks)
        to_end = [0] * len(masks)
        for op, clauses in self.numeric.items():
            if op.lower is None:
                first = 0
            else:
                first = 2 * bisect_left(points, op.lower) + (1 if op.lower_inclusive else 2)
            if op.upper is None:
                last = len(masks) - 1
            else:
                last = 2 * bisect_left(points, op.upper) + (1 if op.upper_inclusive else 0)
            if op.upper is None:
                from_start[first] |= clauses
            elif op.lower is None:
                to_end[last] |= clauses
            else:
                for segment in range(first, last + 1):
                    masks[segment] |= clauses
        running = 0
        for segment, clauses in enumerate(from_start):
            running |= clauses
            masks[segment] |= running
        running = 0
        for segment in range(len(masks) - 1, -1, -1):
            running |= to_end[segment]
            masks[segment] |= running
        return masks

    def but_exclusions(self) -> dict[str, Any]:
        """Lookup tables of the values that each anything-but operator excludes."""
        values: dict[Hashable, int] = {}
        ignore_case: Table = {}
        prefix: dict[int, Table] = {}
        suffix: dict[int, Table] = {}
        wildcards: list[tuple[re.Pattern[str], int]] = []
        for op, clauses in self.but.items():
            if op.kind == ANYTHING_BUT_VALUES:
                for key in op.items:
                    _or(values, key, clauses)
            elif op.kind == ANYTHING_BUT_IGNORE_CASE:
                for text in op.items:
                    _or(ignore_case, str(text), clauses)
            elif op.kind in (ANYTHING_BUT_PREFIX, ANYTHING_BUT_SUFFIX):
                table = prefix if op.kind == ANYTHING_BUT_PREFIX else suffix
                for text in op.items:
                    _or(table.setdefault(len(str(text)), {}), str(text), clauses)
            else:
                wildcards.extend((regex, clauses) for regex in op.regexes)
        return {
            "values": values,
            "ignore_case": ignore_case,
            "prefix": prefix,
            "suffix": suffix,
            "wildcards": wildcards,
        }

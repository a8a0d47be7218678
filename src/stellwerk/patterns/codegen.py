"""Python source specialised to one set of rules: how each slot evaluates a value.

The matcher's work per event is small but was drowned in interpreter overhead (a generic walk,
one call per value, intermediate sets). For each rule set the matcher writes Python source once
and compiles it: per slot, the statements that turn a string or a number into its clause mask
with only the lookups that slot needs (written into the slot's function ``_s<n>`` and inline into
the event walk of ``eventwalk``). Values of odd Python types go to each operator's own
``matches``. Tables are passed in by name, never written into the source.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from bisect import bisect_right
from collections.abc import Callable
from typing import Any

from stellwerk.patterns.conditions import FALSE_KEY, NUMERIC_DECIMALS, NUMERIC_LIMIT, TRUE_KEY
from stellwerk.patterns.flatten import Membership
from stellwerk.patterns.index import SlotIndex
from stellwerk.patterns.wildcard import STAR, tokenize

# Values found in arrays of objects, per path: each with its array membership, and each one's
# clause mask per slot of the path (None when the path also had values outside such arrays).
Found = dict[int, tuple[list[tuple[Any, Membership]], list[list[int]] | None]]
Walk = Callable[[Any, Found], int]
SlotEvaluator = Callable[[Any], int]

MISSING = object()
_LEADING_ZERO = re.compile(r"(?:^|\.)0[0-9]")


class Program:
    """Lines of generated source and the objects its names refer to."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.names: dict[str, Any] = {
            "_M": MISSING,
            "_bisect": bisect_right,
            "TRUE": TRUE_KEY,
            "FALSE": FALSE_KEY,
        }

    def const(self, prefix: str, value: Any) -> str:
        name = f"{prefix}{len(self.names)}"
        self.names[name] = value
        return name

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    def build(self) -> dict[str, Any]:
        """Compile the source once; the namespace then holds the generated functions."""
        source = "\n".join(self.lines) + "\n"
        namespace = dict(self.names)
        namespace["__source__"] = source
        # The source holds generated names and repr() literals of keys only, never event data.
        exec(compile(source, "<stellwerk-matcher>", "exec"), namespace)  # noqa: S102
        return namespace


def ipv4(value: str) -> int | None:
    """A dotted-quad string's address exactly as ``ipaddress`` reads it, several times faster."""
    try:
        packed = socket.inet_pton(socket.AF_INET, value)
    except (OSError, ValueError):
        return None
    if ("0" in value) and _LEADING_ZERO.search(value):
        return None  # ipaddress refuses them as ambiguous; some C libraries read them as octal
    return int.from_bytes(packed, "big")


def _cidr_lookup(tables: dict[tuple[int, int], dict[int, int]]) -> Callable[[str], int]:
    v4 = [(32 - length, table) for (version, length), table in tables.items() if version == 4]
    v6 = [(128 - length, table) for (version, length), table in tables.items() if version == 6]

    def lookup(value: str) -> int:
        mask = 0
        number = ipv4(value)
        if number is not None:
            for shift, table in v4:
                mask |= table.get(number >> shift, 0)
            return mask
        if not v6 or ":" not in value:
            return 0
        try:
            address = ipaddress.IPv6Address(value)
        except ValueError:
            return 0
        number = int(address)
        for shift, table in v6:
            mask |= table.get(number >> shift, 0)
        return mask

    return lookup


def _residual_lookup(slot: SlotIndex) -> Callable[[Any], int]:
    residual = list(slot.residual.items())

    def lookup(value: Any) -> int:
        mask = 0
        for op, clauses in residual:
            if op.matches(value):
                mask |= clauses
        return mask

    return lookup


# Farther than this from every number an operator names, rounding to six decimals cannot change
# how a value compares: it moves a value by at most half a millionth plus half an ulp (an ulp is
# below a millionth within EventBridge's numeric limits).
_NEAR = 2e-6


def _numeric_points(slot: SlotIndex, but: dict[str, Any] | None) -> list[float]:
    """Every number an operator on this slot names: range bounds, exact and excluded values."""
    keys = list(slot.exact) + list(but["values"] if but else ())
    points = {b for op in slot.numeric for b in (op.lower, op.upper) if b is not None}
    points.update(
        key for key in keys if type(key) in (int, float) and -NUMERIC_LIMIT <= key <= NUMERIC_LIMIT
    )
    return sorted(points)


def _wildcards_by_prefix(
    slot: SlotIndex,
) -> dict[int, dict[str, tuple[tuple[Callable[[str], Any], int], ...]]]:
    tables: dict[int, dict[str, tuple[tuple[Callable[[str], Any], int], ...]]] = {}
    for op, clauses in slot.wildcard.items():
        literal = ""
        for token in tokenize(op.text, slot.path):
            if token is STAR:
                break
            literal += token
        table = tables.setdefault(len(literal), {})
        table[literal] = (*table.get(literal, ()), (op.regex.fullmatch, clauses))
    return tables


def string_block(program: Program, slot: SlotIndex, notref: int) -> list[tuple[int, str]]:
    """Statements that set ``m`` to the clause mask of the string ``s`` in this slot.

    Lines come with their indent relative to the block, so that the block can be written into
    the slot's function and inline into the walk alike.
    """
    k = slot.number
    c = program.const
    str_base = notref | slot.present
    # (table, key expression) of each lookup, on the string itself or on its lower case.
    plain: list[tuple[dict[Any, int], str]] = []
    lowered: list[tuple[dict[Any, int], str]] = []
    if slot.exact:
        plain.append((slot.exact, "s"))
    for (length, ignore_case), table in sorted(slot.prefix.items()):
        if length == 0:
            str_base |= table[""]
        else:
            (lowered if ignore_case else plain).append((table, f"{'sl'[ignore_case]}[:{length}]"))
    for (length, ignore_case), table in sorted(slot.suffix.items()):
        if length == 0:
            str_base |= table[""]
        else:
            (lowered if ignore_case else plain).append((table, f"{'sl'[ignore_case]}[-{length}:]"))
    if slot.ignore_case:
        lowered.append((slot.ignore_case, "l"))
    but = slot.but_exclusions() if slot.but else None
    lines: list[tuple[int, str]] = []
    if plain:
        # The base mask folded into the first table saves an OR of big ints per value.
        first, key = plain[0]
        folded = {entry: clauses | str_base for entry, clauses in first.items()}
        terms = [f"{c(f'T{k}_', folded)}.get({key}, {c(f'SB{k}_', str_base)})"]
    else:
        terms = [c(f"SB{k}_", str_base)]
    terms += [f"{c(f'T{k}_', table)}.get({key}, 0)" for table, key in plain[1:]]
    lines.append((0, f"m = {' | '.join(terms)}"))
    if lowered or (but and but["ignore_case"]):
        lines.append((0, "l = s.lower()"))
    if lowered:
        terms = [f"{c(f'T{k}_', table)}.get({key}, 0)" for table, key in lowered]
        lines.append((0, f"m |= {' | '.join(terms)}"))
    # Wildcards by the literal text before their first star: only those whose text the value
    # starts with are tried.
    for length, candidates in sorted(_wildcards_by_prefix(slot).items()):
        lines.append((0, f"for f, w in {c(f'W{k}_', candidates)}.get(s[:{length}], ()):"))
        lines.append((1, "if f(s) is not None:"))
        lines.append((2, "m |= w"))
    if slot.cidr:
        lines.append((0, f"m |= {c(f'C{k}_', _cidr_lookup(slot.cidr))}(s)"))
    if but is not None:
        excluded: list[str] = []
        if but["values"]:
            excluded.append(f"{c(f'BV{k}_', but['values'])}.get(s, 0)")
        if but["ignore_case"]:
            excluded.append(f"{c(f'BI{k}_', but['ignore_case'])}.get(l, 0)")
        for length, table in sorted(but["prefix"].items()):
            excluded.append(f"{c(f'BP{k}_', table)}.get(s[:{length}], 0)")
        for length, table in sorted(but["suffix"].items()):
            excluded.append(f"{c(f'BS{k}_', table)}.get(s[-{length}:], 0)")
        excluded += [
            f"({c(f'BWM{k}_', clauses)} if {c(f'BW{k}_', regex.fullmatch)}(s) else 0)"
            for regex, clauses in but["wildcards"]
        ]
        all_name = c(f"BA{k}_", _but_all(slot))
        if excluded:
            lines.append((0, f"m |= {all_name} & ~({' | '.join(excluded)})"))
        else:
            lines.append((0, f"m |= {all_name}"))
    if slot.residual:
        lines.append((0, f"m |= {c(f'R{k}_', _residual_lookup(slot))}(s)"))
    return lines


def number_block(program: Program, slot: SlotIndex, notref: int) -> list[tuple[int, str]]:
    """Statements that set ``m`` to the clause mask of the number ``s``: one binary search."""
    k = slot.number
    c = program.const
    base = notref | slot.present
    but = slot.but_exclusions() if slot.but else None
    but_all = _but_all(slot)
    points = _numeric_points(slot, but)
    excluded = but["values"] if but is not None else {}
    pt = c(f"PT{k}_", points)
    seg = c(f"SEG{k}_", slot.segments(points, base, but_all, excluded))
    # round(v, 6) costs microseconds; it can only change the outcome near a number that some
    # operator names, since it moves v by less than a millionth.
    near = f"(i and n - {pt}[i - 1] < {_NEAR}) or (i < {len(points)} and {pt}[i] - n < {_NEAR})"
    far = f"m = {c(f'NM{k}_', base)}"
    if slot.exact:
        far += f" | {c(f'E{k}_', slot.exact)}.get(s, 0)"
    if but_all:
        far += f" | ({c(f'BA{k}_', but_all)} & ~{c(f'BV{k}_', excluded)}.get(s, 0))"
    lines = [
        (0, f"if {-NUMERIC_LIMIT} <= s <= {NUMERIC_LIMIT}:"),
        (1, "n = s"),
        (1, f"i = _bisect({pt}, n)"),
        (1, f"if type(s) is float and ({near}):"),
        (2, f"n = round(s, {NUMERIC_DECIMALS})"),
        (2, f"i = _bisect({pt}, n)"),
        (1, f"m = {seg}[2 * i - 1 if i and {pt}[i - 1] == n else 2 * i]"),
        (0, "else:"),
        (1, far),
    ]
    if slot.residual:
        lines.append((0, f"m |= {c(f'R{k}_', _residual_lookup(slot))}(s)"))
    return lines


def _but_all(slot: SlotIndex) -> int:
    mask = 0
    for clauses in slot.but.values():
        mask |= clauses
    return mask


def slot_function(
    program: Program,
    slot: SlotIndex,
    notref: int,
    strings: list[tuple[int, str]],
    numbers: list[tuple[int, str]],
) -> str:
    """Emit ``def _s<n>(v)``: the clause mask of one leaf value in this slot."""
    k = slot.number
    c = program.const
    base = notref | slot.present
    exact = c(f"E{k}_", slot.exact) if slot.exact else None
    but_all = _but_all(slot)
    residual = c(f"R{k}_", _residual_lookup(slot)) if slot.residual else None
    reference = c(f"REF{k}_", lambda value: slot.reference(value, notref))

    e = program.emit
    e(0, f"def _s{k}(v):")
    e(1, "c = type(v)")
    e(1, "if c is str:")
    e(2, "s = v")
    for indent, line in strings:
        e(2 + indent, line)
    e(2, "return m")
    # Numbers (bool is its own class, so it is not caught here).
    e(1, "if c is int or c is float:")
    e(2, "s = v")
    for indent, line in numbers:
        e(2 + indent, line)
    e(2, "return m")
    # true, false and null: only exact values, anything-but and exists can match them.
    other = c(f"OM{k}_", base | but_all)
    for test, key in (("c is bool", "TRUE if v else FALSE"), ("v is None", "None")):
        e(1, f"if {test}:")
        e(2, f"m = {other}" + (f" | {exact}.get({key}, 0)" if exact else ""))
        if residual:
            e(2, f"m |= {residual}(v)")
        e(2, "return m")
    e(1, f"return {reference}(v)")
    e(0, "")
    return f"_s{k}"

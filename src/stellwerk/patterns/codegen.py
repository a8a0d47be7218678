"""Python source specialised to one set of rules: the event walk and the per-slot evaluators.

The matcher's work per event is small but was drowned in interpreter overhead (a generic walk,
one call per value, intermediate sets). For each rule set this module writes one function that
visits exactly the keys the rules name, in straight-line code with ``dict.get``, and one function
per slot that evaluates a value with only the lookups that slot needs. Everything unusual (arrays
on the way, keys containing dots, objects where a value was expected, odd Python types) goes to
the generic walk of ``flatten`` and to each operator's own ``matches``, so the generated code only
has to be right for the common shapes. Tables are passed in by name, never written into the
source; keys appear as ``repr`` literals.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from bisect import bisect_right
from collections.abc import Callable, Sequence
from typing import Any

from stellwerk.patterns.conditions import FALSE_KEY, NUMERIC_DECIMALS, NUMERIC_LIMIT, TRUE_KEY
from stellwerk.patterns.flatten import Membership, Placed, Trie, take, walk
from stellwerk.patterns.index import SlotIndex
from stellwerk.patterns.wildcard import STAR, tokenize

# Values found in arrays of objects, per path: each with its array membership, and each one's
# clause mask per slot of the path (None when the path also had values outside such arrays).
Found = dict[int, tuple[list[tuple[Any, Membership]], list[list[int]] | None]]
Walk = Callable[[Any, Found], int]
SlotEvaluator = Callable[[Any], int]

_MISSING = object()
_LEADING_ZERO = re.compile(r"(?:^|\.)0[0-9]")


class Program:
    """Lines of generated source and the objects its names refer to."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.names: dict[str, Any] = {
            "_M": _MISSING,
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
        # The source is made here from repr() literals and generated names only (see module doc).
        exec(compile(source, "<stellwerk-matcher>", "exec"), namespace)  # noqa: S102
        return namespace


def _ipv4(value: str) -> int | None:
    """A dotted-quad string's address exactly as ``ipaddress`` reads it, several times faster."""
    try:
        packed = socket.inet_pton(socket.AF_INET, value)
    except (OSError, ValueError):
        return None
    if _LEADING_ZERO.search(value):
        return None  # ipaddress refuses them as ambiguous; some C libraries read them as octal
    return int.from_bytes(packed, "big")


def _cidr_lookup(tables: dict[tuple[int, int], dict[int, int]]) -> Callable[[str], int]:
    v4 = [(32 - length, table) for (version, length), table in tables.items() if version == 4]
    v6 = [(128 - length, table) for (version, length), table in tables.items() if version == 6]

    def lookup(value: str) -> int:
        mask = 0
        number = _ipv4(value)
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
    str_terms: list[str] = []
    lowered_terms: list[str] = []
    for (length, ignore_case), table in sorted(slot.prefix.items()):
        if length == 0:
            str_base |= table[""]
            continue
        name = c(f"P{k}_", table)
        (lowered_terms if ignore_case else str_terms).append(
            f"{name}.get({'l' if ignore_case else 's'}[:{length}], 0)"
        )
    for (length, ignore_case), table in sorted(slot.suffix.items()):
        if length == 0:
            str_base |= table[""]
            continue
        name = c(f"S{k}_", table)
        (lowered_terms if ignore_case else str_terms).append(
            f"{name}.get({'l' if ignore_case else 's'}[-{length}:], 0)"
        )
    if slot.ignore_case:
        lowered_terms.append(f"{c(f'I{k}_', slot.ignore_case)}.get(l, 0)")
    but = slot.but_exclusions() if slot.but else None
    lines: list[tuple[int, str]] = []
    terms = [c(f"SB{k}_", str_base)]
    if slot.exact:
        terms.append(f"{c(f'E{k}_', slot.exact)}.get(s, 0)")
    terms += str_terms
    lines.append((0, f"m = {' | '.join(terms)}"))
    if lowered_terms or (but and but["ignore_case"]):
        lines.append((0, "l = s.lower()"))
    if lowered_terms:
        lines.append((0, f"m |= {' | '.join(lowered_terms)}"))
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
        (1, f"if s.__class__ is float and ({near}):"),
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
    e(1, "c = v.__class__")
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


def _generic(
    children: Trie | None,
    number: int,
    plan: Sequence[tuple[int, Sequence[tuple[int, int]]]],
    every: int,
    evaluators: dict[int, SlotEvaluator],
    *,
    whole_event: bool = False,
) -> Walk:
    """The slow but complete walk of one value: arrays, dotted keys, objects in odd places."""

    def generic(value: Any, found: Found) -> int:
        values: dict[int, list[Any]] = {}
        placed: Placed = {}
        if whole_event and children is not None:
            walk(value, children, values, placed, ())
        else:
            take(value, children, number, values, placed, ())
        mask = every
        for path, slots in plan:
            got = values.get(path)
            if got is None:
                for _, absent_ok in slots:
                    mask &= absent_ok
                continue
            entries = placed.get(path)
            if entries is not None and len(entries) == len(got):
                # All in arrays of objects: keep each value's mask for the same-element check.
                masks = [[evaluators[slot](value) for value, _ in entries] for slot, _ in slots]
                for each in masks:
                    union = 0
                    for one in each:
                        union |= one
                    mask &= union
                found[path] = (entries, masks)
                continue
            for slot, _ in slots:
                evaluate = evaluators[slot]
                union = 0
                for item in got:
                    union |= evaluate(item)
                mask &= union
            if entries is not None:
                found[path] = (entries, None)
        return mask

    return generic


def _array_rest(leaves: Sequence[tuple[int, int]], every: int) -> Callable[..., int]:
    """Finishes the generated loop over an array of flat objects when some element lacked a key.

    ``leaves`` holds, per key, the clauses not reading it and the mask when it is absent.
    """

    def rest(same: int, seen: int, partial: list[tuple[int, int]] | None) -> int:
        mask = every
        for column, (_, absent_ok) in enumerate(leaves):
            if not seen >> column & 1:
                mask &= absent_ok
        for alone, missing in partial or ():
            # A key the element lacks fails its clauses only if other elements have it.
            for column, (notref, _) in enumerate(leaves):
                if (missing & seen) >> column & 1:
                    alone &= notref
            same |= alone
        return mask & same if seen else mask

    return rest


def _nested(trie: Trie) -> bool:
    """Whether keys with dots can matter in an object at this node: only if they can lead
    through a child object to a rule's path, so not when every child is a leaf."""
    return any(children is not None for children, _ in trie.values())


class WalkWriter:
    """Writes ``_walk_event(ev, found)``: the clause mask of an event, visiting only rule paths."""

    def __init__(
        self,
        program: Program,
        trie: Trie,
        slots_of_path: dict[int, list[SlotIndex]],
        every: int,
        evaluators: dict[int, SlotEvaluator],
        strings: dict[int, list[tuple[int, str]]],
        numbers: dict[int, list[tuple[int, str]]],
    ) -> None:
        self.program = program
        self.trie = trie
        self.slots_of_path = slots_of_path
        self.every = every
        self.evaluators = evaluators
        self.strings = strings  # per slot, the statements of ``string_block``
        self.numbers = numbers  # and of ``number_block``, for slots that compare numbers

    def _absent_ok(self, slot: SlotIndex) -> int:
        return (self.every & ~slot.ref) | slot.absent

    def _paths(self, children: Trie | None, number: int) -> list[int]:
        paths = [number] if number >= 0 else []
        for child, (grandchildren, child_number) in (children or {}).items():
            del child
            paths += self._paths(grandchildren, child_number)
        return paths

    def _plan(self, paths: list[int]) -> list[tuple[int, list[tuple[int, int]]]]:
        return [
            (path, [(slot.number, self._absent_ok(slot)) for slot in self.slots_of_path[path]])
            for path in paths
        ]

    def _fold(self, paths: list[int]) -> tuple[int, int]:
        """The mask when all these paths are absent, and the clauses that read any of them."""
        absent, ref = self.every, 0
        for path in paths:
            for slot in self.slots_of_path[path]:
                absent &= self._absent_ok(slot)
                ref |= slot.ref
        return absent, ref

    def write(self) -> str:
        program, c, e = self.program, self.program.const, self.program.emit
        everything = self._paths(self.trie, -1)
        root_absent, _ = self._fold(everything)
        root = _generic(
            self.trie, -1, self._plan(everything), self.every, self.evaluators, whole_event=True
        )
        e(0, "def _walk_event(ev, F):")
        e(1, "if ev.__class__ is not dict:")
        e(2, f"return {c('ABS', root_absent)}")
        if _nested(self.trie):
            e(1, "if '.' in ''.join(ev):")
            e(2, f"return {c('G', root)}(ev, F)")
        e(1, f"M = {c('ALL', self.every)}")
        self._node(self.trie, "ev", 1, 0)
        e(1, "return M")
        del program
        return "_walk_event"

    def _order(self, edge: tuple[str, tuple[Trie | None, int]]) -> tuple[int, str]:
        _, (children, number) = edge
        if children is not None:
            return 2, edge[0]
        slots = self.slots_of_path[number]
        return (0 if len(slots) == 1 and slots[0].exact_strings_only else 1), edge[0]

    def _node(self, trie: Trie, var: str, indent: int, depth: int) -> None:
        for key, (children, number) in sorted(trie.items(), key=self._order):
            if children is None:
                self._leaf(key, number, var, indent)
            else:
                self._inner(key, children, number, var, indent, depth)

    def _evaluate(self, number: int) -> str:
        return " & ".join(f"_s{slot.number}(v)" for slot in self.slots_of_path[number])

    def _string(self, slot: SlotIndex, var: str, target: str, indent: int) -> None:
        """``target &= mask`` of the string ``var``, inline: one lookup for exact values."""
        c, e = self.program.const, self.program.emit
        if slot.exact_strings_only:
            notref = self.every & ~slot.ref
            table = {key: notref | clauses for key, clauses in slot.exact.items()}
            e(indent, f"{target} &= {c('X', table)}.get({var}, {c('N', notref)})")
            return
        e(indent, f"s = {var}")
        for relative, line in self.strings[slot.number]:
            e(indent + relative, line)
        e(indent, f"{target} &= m")

    def _number(self, slot: SlotIndex, var: str, target: str, indent: int) -> bool:
        """``elif`` branch: ``target &= mask`` of the number ``var``, inline, if slot compares
        numbers at all (else numbers are rare there and go through ``_s``)."""
        e = self.program.emit
        lines = self.numbers.get(slot.number)
        if lines is None:
            return False
        e(indent, f"elif {var}.__class__ is int or {var}.__class__ is float:")
        e(indent + 1, f"s = {var}")
        for relative, line in lines:
            e(indent + 1 + relative, line)
        e(indent + 1, f"{target} &= m")
        return True

    def _leaf(self, key: str, number: int, var: str, indent: int) -> None:
        c, e = self.program.const, self.program.emit
        absent, _ = self._fold([number])
        generic = c("G", _generic(None, number, self._plan([number]), self.every, self.evaluators))
        slots = self.slots_of_path[number]
        e(indent, f"v = {var}.get({key!r}, _M)")
        if len(slots) == 1:
            e(indent, "if v.__class__ is str:")
            self._string(slots[0], "v", "M", indent + 1)
            self._number(slots[0], "v", "M", indent)
            e(indent, "elif v is _M:")
        else:
            e(indent, "if v is _M:")
        e(indent + 1, f"M &= {c('ABS', absent)}")
        e(indent, "elif v.__class__ is list:")
        self._scalars(number, absent, generic, indent + 1)
        e(indent, "elif v.__class__ is dict:")
        e(indent + 1, f"M &= {c('ABS', absent)}")
        e(indent, "else:")
        e(indent + 1, f"M &= {self._evaluate(number)}")

    def _scalars(self, number: int, absent: int, generic: str, indent: int) -> None:
        """An array of scalars at a leaf (``tags: ["a", "b"]``): the union of their masks."""
        c, e = self.program.const, self.program.emit
        slots = self.slots_of_path[number]
        if len(slots) != 1:
            e(indent, f"M &= {generic}(v, F)")
            return
        e(indent, "u = 0")
        e(indent, "for x in v:")
        e(indent + 1, "if x.__class__ is str:")
        e(indent + 2, f"q = {c('ALL', self.every)}")
        self._string(slots[0], "x", "q", indent + 2)
        e(indent + 2, "u |= q")
        e(indent + 1, "elif x.__class__ is list or x.__class__ is dict:")
        e(indent + 2, f"u = {generic}(v, F)")
        e(indent + 2, "break")
        e(indent + 1, "else:")
        e(indent + 2, f"u |= _s{slots[0].number}(x)")
        e(indent, f"M &= u if v else {c('ABS', absent)}")

    def _inner(
        self, key: str, children: Trie, number: int, var: str, indent: int, depth: int
    ) -> None:
        c, e = self.program.const, self.program.emit
        paths = self._paths(children, number)
        absent, ref = self._fold(paths)
        below, _ = self._fold(self._paths(children, -1))
        walk = _generic(children, number, self._plan(paths), self.every, self.evaluators)
        generic = c("G", walk)
        inner = f"d{depth + 1}"
        e(indent, f"if M & {c('REF', ref)}:")
        e(indent + 1, f"v = {var}.get({key!r}, _M)")
        e(indent + 1, "if v.__class__ is dict:")
        if _nested(children):
            e(indent + 2, "if '.' in ''.join(v):")
            e(indent + 3, f"M &= {generic}(v, F)")
            e(indent + 2, "else:")
            indent += 1
        if number >= 0:
            own, _ = self._fold([number])
            e(indent + 2, f"M &= {c('ABS', own)}")
        e(indent + 2, f"{inner} = v")
        self._node(children, inner, indent + 2, depth + 1)
        if _nested(children):
            indent -= 1
        e(indent + 1, "elif v is _M:")
        e(indent + 2, f"M &= {c('ABS', absent)}")
        e(indent + 1, "elif v.__class__ is list:")
        flat = number < 0 and all(
            grandchildren is None and len(self.slots_of_path[leaf]) == 1
            for grandchildren, leaf in children.values()
        )
        if flat:
            self._flat_array(children, generic, indent + 2)
        else:
            e(indent + 2, f"M &= {generic}(v, F)")
        e(indent + 1, "else:")
        e(indent + 2, f"M &= {c('ABS', below)}")
        if number >= 0:
            e(indent + 2, f"M &= {self._evaluate(number)}")

    def _flat_array(self, children: Trie, generic: str, indent: int) -> None:
        """An array of flat objects (``items: [{sku, quantity}, ...]``), inline.

        EventBridge requires a clause's fields in one array to be satisfied by one element, so
        the mask is the union over elements of what each element satisfies on its own. Anything
        but scalars in flat objects goes to the generic walk. Keys with dots need no care here:
        in an object whose fields are all leaves they cannot name a rule's path.
        """
        c, e = self.program.const, self.program.emit
        leaves = list(children.items())
        info = [
            (self.every & ~self.slots_of_path[leaf][0].ref, self._fold([leaf])[0])
            for _, (_, leaf) in leaves
        ]
        every = c("ALL", self.every)
        e(indent, "ok = True")
        e(indent, "sm = sn = 0")
        e(indent, "pt = None")
        e(indent, "for x in v:")
        e(indent + 1, "if x.__class__ is not dict:")
        e(indent + 2, "if x.__class__ is list:")
        e(indent + 3, "ok = False")
        e(indent + 3, "break")
        e(indent + 2, "continue")
        e(indent + 1, f"a = {every}")
        e(indent + 1, "ms = 0")
        for column, (key, (_, leaf)) in enumerate(leaves):
            e(indent + 1, f"y = x.get({key!r}, _M)")
            e(indent + 1, "if y is _M:")
            e(indent + 2, f"ms |= {1 << column}")
            e(indent + 1, "elif y.__class__ is list or y.__class__ is dict:")
            e(indent + 2, "ok = False")
            e(indent + 2, "break")
            e(indent + 1, "elif y.__class__ is str:")
            self._string(self.slots_of_path[leaf][0], "y", "a", indent + 2)
            e(indent + 2, f"sn |= {1 << column}")
            if self._number(self.slots_of_path[leaf][0], "y", "a", indent + 1):
                e(indent + 2, f"sn |= {1 << column}")
            e(indent + 1, "else:")
            e(indent + 2, f"a &= _s{self.slots_of_path[leaf][0].number}(y)")
            e(indent + 2, f"sn |= {1 << column}")
        e(indent + 1, "if ms:")
        e(indent + 2, "if pt is None:")
        e(indent + 3, "pt = []")
        e(indent + 2, "pt.append((a, ms))")
        e(indent + 1, "else:")
        e(indent + 2, "sm |= a")
        e(indent, "if not ok:")
        e(indent + 1, f"M &= {generic}(v, F)")
        e(indent, f"elif pt is None and sn == {(1 << len(leaves)) - 1}:")
        e(indent + 1, "M &= sm")
        e(indent, "else:")
        e(indent + 1, f"M &= {c('AR', _array_rest(info, self.every))}(sm, sn, pt)")

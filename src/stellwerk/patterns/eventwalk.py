"""The generated walk over an event: the clause mask of an event, visiting only rule paths.

``WalkWriter`` writes ``_walk_event(ev, F)`` for a rule set: straight-line ``dict.get`` along the
union of the rules' paths, the slot evaluation of ``codegen`` inline at each leaf, subtrees that
no clause still in the running reads skipped, and arrays of flat objects checked element by
element inline. Everything unusual (keys containing dots, nested arrays, objects where a value
was expected) goes to the generic walk of ``flatten``, so the generated code only has to be
right for the common shapes. Keys appear in the source as ``repr`` literals.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from stellwerk.patterns.codegen import Found, Program, SlotEvaluator, Walk
from stellwerk.patterns.flatten import Placed, Trie, take, walk
from stellwerk.patterns.index import SlotIndex


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
        for grandchildren, child_number in (children or {}).values():
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
        c, e = self.program.const, self.program.emit
        everything = self._paths(self.trie, -1)
        root_absent, _ = self._fold(everything)
        root = _generic(
            self.trie, -1, self._plan(everything), self.every, self.evaluators, whole_event=True
        )
        e(0, "def _walk_event(ev, F):")
        e(1, "if type(ev) is not dict:")
        e(2, f"return {c('ABS', root_absent)}")
        if _nested(self.trie):
            e(1, "if '.' in ''.join(ev):")
            e(2, f"return {c('G', root)}(ev, F)")
        e(1, f"M = {c('ALL', self.every)}")
        self._node(self.trie, "ev", 1, 0)
        e(1, "return M")
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
        """``target &= mask`` of the string ``var`` (mask left in ``m`` without a target),
        inline: one lookup for exact values."""
        c, e = self.program.const, self.program.emit
        if slot.exact_strings_only:
            notref = self.every & ~slot.ref
            e(indent, f"{target} &= {self._exact(slot)}.get({var}, {c('N', notref)})")
            return
        e(indent, f"s = {var}")
        for relative, line in self.strings[slot.number]:
            e(indent + relative, line)
        if target:
            e(indent, f"{target} &= m")

    def _exact(self, slot: SlotIndex) -> str:
        """The table of an exact-only slot, the clauses reading no other slot folded in."""
        notref = self.every & ~slot.ref
        table = {key: notref | clauses for key, clauses in slot.exact.items()}
        return self.program.const("X", table)

    def _number(self, slot: SlotIndex, var: str, kind: str, target: str, indent: int) -> bool:
        """``elif`` branch: ``target &= mask`` of the number ``var`` (of type ``kind``), inline,
        if the slot compares numbers at all (else numbers are rare there: ``_s`` does them)."""
        if slot.number not in self.numbers:
            return False
        self.program.emit(indent, f"elif {kind} is int or {kind} is float:")
        self._number_body(slot, var, target, indent + 1)
        return True

    def _number_body(self, slot: SlotIndex, var: str, target: str, indent: int) -> None:
        e = self.program.emit
        e(indent, f"s = {var}")
        for relative, line in self.numbers[slot.number]:
            e(indent + relative, line)
        e(indent, f"{target} &= m")

    def _leaf(self, key: str, number: int, var: str, indent: int) -> None:
        c, e = self.program.const, self.program.emit
        absent, _ = self._fold([number])
        generic = c("G", _generic(None, number, self._plan([number]), self.every, self.evaluators))
        slots = self.slots_of_path[number]
        e(indent, f"v = {var}.get({key!r}, _M)")
        e(indent, "t = type(v)")  # type() is cheaper than v.__class__ in CPython 3.11
        e(indent, "if t is str:")
        for slot in slots:  # more than one when a clause names the path twice
            self._string(slot, "v", "M", indent + 1)
        if any(slot.number in self.numbers for slot in slots):
            e(indent, "elif t is int or t is float:")
            for slot in slots:
                if slot.number in self.numbers:
                    self._number_body(slot, "v", "M", indent + 1)
                else:
                    e(indent + 1, f"M &= _s{slot.number}(v)")
        e(indent, "elif v is _M:")
        e(indent + 1, f"M &= {c('ABS', absent)}")
        e(indent, "elif t is list:")
        self._scalars(number, absent, generic, indent + 1)
        e(indent, "elif t is dict:")
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
        e(indent + 1, "k = type(x)")
        e(indent + 1, "if k is str:")
        if slots[0].exact_strings_only:
            e(
                indent + 2,
                f"u |= {self._exact(slots[0])}.get(x, {c('N', self.every & ~slots[0].ref)})",
            )
        else:
            self._string(slots[0], "x", "", indent + 2)
            e(indent + 2, "u |= m")
        e(indent + 1, "elif k is list or k is dict:")
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
        e(indent + 1, "t = type(v)")
        e(indent + 1, "if t is dict:")
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
        e(indent + 1, "elif t is list:")
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
        e(indent + 1, "k = type(x)")
        e(indent + 1, "if k is not dict:")
        e(indent + 2, "if k is list:")
        e(indent + 3, "ok = False")
        e(indent + 3, "break")
        e(indent + 2, "continue")
        e(indent + 1, f"a = {every}")
        e(indent + 1, "ms = 0")
        for column, (key, (_, leaf)) in enumerate(leaves):
            e(indent + 1, f"y = x.get({key!r}, _M)")
            e(indent + 1, "z = type(y)")
            e(indent + 1, "if z is str:")
            self._string(self.slots_of_path[leaf][0], "y", "a", indent + 2)
            e(indent + 2, f"sn |= {1 << column}")
            if self._number(self.slots_of_path[leaf][0], "y", "z", "a", indent + 1):
                e(indent + 2, f"sn |= {1 << column}")
            e(indent + 1, "elif y is _M:")
            e(indent + 2, f"ms |= {1 << column}")
            e(indent + 1, "elif z is list or z is dict:")
            e(indent + 2, "ok = False")
            e(indent + 2, "break")
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

"""The multi-rule matcher: all rules of a bus against an event in one pass.

Every clause of every rule (one per ``$or`` alternative) is a bit of a Python int. The event is
walked once, along the union of the paths the rules name, by code generated for the rule set
(``eventwalk``, ``codegen``); each value found is turned into the mask of clauses it does not
rule out by a few table lookups (``index``), and the masks are ANDed together. What is left are
the matching clauses, so the work per event depends on the paths the rules read, not on how many
rules there are; a subtree no remaining clause reads is skipped. Clauses that combine fields from
objects inside arrays get EventBridge's exact same-element check.

Rules are added and removed copy-on-write: a change swaps in a new rule table and drops the
compiled snapshot; the next ``match`` builds a fresh one. A ``match`` already running keeps using
the snapshot it started with, so changes never disturb it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import msgspec

from stellwerk.patterns.codegen import (
    Found,
    Program,
    SlotEvaluator,
    number_block,
    slot_function,
    string_block,
)
from stellwerk.patterns.compiled import CompiledPattern, Event, compile_pattern, load_event
from stellwerk.patterns.conditions import Field
from stellwerk.patterns.eventwalk import WalkWriter
from stellwerk.patterns.flatten import Membership, build_trie, consistent
from stellwerk.patterns.index import SlotIndex

_decode = msgspec.json.Decoder().decode


class _Snapshot:
    """Immutable compiled form of a set of rules."""

    def __init__(self, rules: dict[str, CompiledPattern]) -> None:
        # Bit i of a mask is clause i; clauses are numbered in rule order, so the bits of a mask
        # read from low to high give the matching rules in the order they were added.
        self.clause_names: list[str] = []
        self.clause_fields: list[tuple[tuple[int, Field], ...]] = []
        path_numbers: dict[str, int] = {}
        slots: list[SlotIndex] = []
        self.slots_of_path: dict[int, list[SlotIndex]] = {}
        for name, pattern in rules.items():
            for clause in pattern.clauses:
                bit = len(self.clause_names)
                self.clause_names.append(name)
                occurrences: dict[int, int] = {}
                for field in clause:
                    number = path_numbers.setdefault(field.path, len(path_numbers))
                    occurrence = occurrences[number] = occurrences.get(number, -1) + 1
                    path_slots = self.slots_of_path.setdefault(number, [])
                    if occurrence == len(path_slots):
                        slot = SlotIndex(len(slots), field.path)
                        slots.append(slot)
                        path_slots.append(slot)
                    path_slots[occurrence].add(field, bit)
                self.clause_fields.append(
                    tuple((path_numbers[field.path], field) for field in clause)
                )
        every = (1 << len(self.clause_names)) - 1
        program = Program()
        evaluators: dict[int, SlotEvaluator] = {}
        strings, numbers = {}, {}
        for slot in slots:
            notref = every & ~slot.ref
            strings[slot.number] = string_block(program, slot, notref)
            numbers[slot.number] = number_block(program, slot, notref)
            slot_function(program, slot, notref, strings[slot.number], numbers[slot.number])
        trie = build_trie(list(path_numbers))
        compares_numbers = {
            slot.number: numbers[slot.number] for slot in slots if slot.compares_numbers
        }
        writer = WalkWriter(
            program, trie, self.slots_of_path, every, evaluators, strings, compares_numbers
        )
        entry = writer.write()
        namespace = program.build()
        evaluators.update({slot.number: namespace[f"_s{slot.number}"] for slot in slots})
        self.source: str = namespace["__source__"]
        self.walk = namespace[entry]

    def match(self, event: Any) -> list[str]:
        found: Found = {}
        mask = self.walk(event, found)
        if not mask:
            return []
        if found:
            mask = self._same_elements(mask, found)
        # Highest bit first: bit_length() finds it in constant time, and the single-bit int to
        # clear it is cheaper to make than the lowest bit's (mask & -mask).
        names = self.clause_names
        matched: list[str] = []
        last = None
        while mask:
            top = mask.bit_length() - 1
            name = names[top]
            if name is not last:  # the $or alternatives of one rule are neighbours
                matched.append(name)
                last = name
            mask ^= 1 << top
        matched.reverse()
        return matched

    def _same_elements(self, mask: int, found: Found) -> int:
        """Drop clauses whose fields were satisfied only by different elements of one array."""
        once = twice = 0
        for path, (_, masks) in found.items():
            for slot in self.slots_of_path[path]:
                if masks is None:
                    twice |= slot.ref
                twice |= once & slot.ref
                once |= slot.ref
        suspects = mask & twice
        if not suspects:
            return mask
        same = self._one_array(found)
        if same is not None:
            return mask & ~(suspects & ~same)
        while suspects:
            lowest = suspects & -suspects
            if not self._consistent(lowest.bit_length() - 1, found):
                mask &= ~lowest
            suspects ^= lowest
        return mask

    def _one_array(self, found: Found) -> int | None:
        """With every value in the elements of one array (the usual case), the clauses that one
        element satisfies alone; None when the values sit in several arrays or nested ones."""
        elements: dict[Membership, int] = {}
        array = None
        for entries, masks in found.values():
            if masks is None:
                return None
            for _, member in entries:
                if len(member) != 1 or (array is not None and member[0][0] != array):
                    return None
                array = member[0][0]
                elements[member] = -1
        for path, (entries, masks) in found.items():
            for slot, slot_masks in zip(self.slots_of_path[path], masks or (), strict=True):
                satisfied = dict.fromkeys(elements, ~slot.ref)
                for (_, member), clauses in zip(entries, slot_masks, strict=True):
                    satisfied[member] |= clauses & slot.ref
                for member, clauses in satisfied.items():
                    elements[member] &= clauses
        same = 0
        for clauses in elements.values():
            same |= clauses
        return same

    def _consistent(self, clause: int, found: Found) -> bool:
        """The clause's fields can all be taken from the same array elements (as in compiled)."""
        choices: list[list[Membership]] = []
        for number, field in self.clause_fields[clause]:
            got = found.get(number)
            if got is None:
                continue  # not inside an array of objects: compatible with everything
            members = [member for value, member in got[0] if field.matches(value)]
            if not members:
                return False
            if any(members):
                choices.append(members)
        return len(choices) < 2 or consistent(choices)


class Matcher:
    """The rules of one bus, matched together against each event.

    ``add`` and ``remove`` may be called from other threads while ``match`` runs.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: dict[str, CompiledPattern] = {}
        self._snapshot: _Snapshot | None = _Snapshot({})

    def add(self, name: str, pattern: dict[str, Any] | str | bytes | CompiledPattern) -> None:
        """Add a rule, or replace the rule of that name; raises InvalidPatternError."""
        compiled = pattern if isinstance(pattern, CompiledPattern) else compile_pattern(pattern)
        with self._lock:
            rules = dict(self._rules)
            rules.pop(name, None)
            rules[name] = compiled
            self._rules = rules
            self._snapshot = None

    def remove(self, name: str) -> None:
        """Remove a rule; removing a rule that is not there does nothing."""
        with self._lock:
            if name not in self._rules:
                return
            rules = dict(self._rules)
            del rules[name]
            self._rules = rules
            self._snapshot = None

    def __contains__(self, name: object) -> bool:
        return name in self._rules

    def __len__(self) -> int:
        return len(self._rules)

    @property
    def names(self) -> Sequence[str]:
        return list(self._rules)

    def pattern(self, name: str) -> CompiledPattern:
        return self._rules[name]

    def _current(self) -> _Snapshot:
        snapshot = self._snapshot
        if snapshot is None:
            with self._lock:
                snapshot = self._snapshot
                if snapshot is None:
                    snapshot = self._snapshot = _Snapshot(self._rules)
        return snapshot

    def match(self, event: Event) -> list[str]:
        """The names of all rules the event matches, in the order the rules were added."""
        snapshot = self._snapshot or self._current()
        if event.__class__ is bytes:
            try:
                return snapshot.match(_decode(event))
            except msgspec.DecodeError:
                pass  # load_event says what is wrong
        return snapshot.match(event if event.__class__ is dict else load_event(event))

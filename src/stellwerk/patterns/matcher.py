"""The multi-rule matcher: all rules of a bus against an event in one pass.

Like event-ruler's state machine, the work is shared between rules rather than repeated per rule:
the event is walked once for the union of all paths the rules read; each distinct operator on a
path is evaluated once (mostly by dictionary lookups, see ``index``); then only the clauses whose
narrowest field matched are looked at, by set lookups in the operators that matched. A clause
that mixes fields from objects inside arrays gets the exact array-consistency check afterwards,
as EventBridge requires.

Rules are added and removed copy-on-write: a change swaps in a new rule table and drops the
compiled snapshot; the next ``match`` builds a fresh snapshot. A ``match`` already running keeps
using the snapshot it started with, so changes never disturb it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from stellwerk.patterns.compiled import CompiledPattern, Event, compile_pattern, load_event
from stellwerk.patterns.conditions import (
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
from stellwerk.patterns.flatten import Membership, Placed, Trie, build_trie, consistent, scan
from stellwerk.patterns.index import PathIndex

# How many events an operator typically lets through, lowest first: a clause is looked at only
# when the operator of its narrowest field matched, so most clauses are never touched.
_BREADTH: dict[type[Operator], int] = {
    Equals: 1,
    EqualsIgnoreCase: 2,
    Cidr: 3,
    Prefix: 3,
    Suffix: 3,
    Wildcard: 4,
    Numeric: 5,
    AnythingBut: 8,
    Exists: 9,
}


def _breadth(field: Field) -> tuple[int, int]:
    return max(_BREADTH[type(op)] for op in field.operators), len(field.operators)


class _Snapshot:
    """Immutable compiled form of a set of rules."""

    def __init__(self, rules: dict[str, CompiledPattern]) -> None:
        self.names = list(rules)
        path_numbers: dict[str, int] = {}
        operator_ids: dict[tuple[int, Operator], int] = {}
        self.indexes: list[PathIndex] = []
        gated: list[list[int]] = []
        self.clause_rule: list[int] = []
        self.clause_rest: list[tuple[frozenset[int], ...]] = []
        self.clause_fields: list[tuple[tuple[int, frozenset[int]], ...]] = []
        self.clause_paths: list[frozenset[int]] = []
        for rule_number, pattern in enumerate(rules.values()):
            for clause in pattern.clauses:
                numbered: list[tuple[int, frozenset[int]]] = []
                field_tids: dict[frozenset[int], Field] = {}
                for field in clause:
                    number = path_numbers.setdefault(field.path, len(path_numbers))
                    if number == len(self.indexes):
                        self.indexes.append(PathIndex())
                    tids = set()
                    for op in field.operators:
                        tid = operator_ids.get((number, op))
                        if tid is None:
                            tid = operator_ids[(number, op)] = len(operator_ids)
                            self.indexes[number].add(op, tid)
                            gated.append([])
                        tids.add(tid)
                    field_tids.setdefault(frozenset(tids), field)
                    numbered.append((number, frozenset(tids)))
                cid = len(self.clause_rule)
                gate = min(field_tids, key=lambda tids: _breadth(field_tids[tids]))
                for tid in gate:
                    gated[tid].append(cid)
                self.clause_rule.append(rule_number)
                self.clause_rest.append(tuple(tids for tids in field_tids if tids != gate))
                self.clause_fields.append(tuple(numbered))
                self.clause_paths.append(frozenset(number for number, _ in numbered))
        for index in self.indexes:
            index.freeze()
        self.gated = [tuple(cids) for cids in gated]
        self.evaluators = [index.evaluator() for index in self.indexes]
        self.absent = [
            (number, tuple(index.absent))
            for number, index in enumerate(self.indexes)
            if index.absent
        ]
        self.trie: Trie = build_trie(list(path_numbers))

    def match(self, event: Any) -> list[str]:
        hit: set[int] = set()
        seen: set[int] = set()
        placed = scan(event, self.trie, self.evaluators, hit, seen)
        for number, tids in self.absent:
            if number not in seen:
                hit.update(tids)
        if not hit:
            return []
        gated = self.gated
        rest = self.clause_rest
        rule_of = self.clause_rule
        disjoint = hit.isdisjoint
        rules: set[int] = set()
        per_value: dict[int, list[tuple[Membership, set[int]]]] = {}
        for tid in hit:
            for cid in gated[tid]:
                rule = rule_of[cid]
                if rule in rules:
                    continue
                for needed in rest[cid]:
                    if disjoint(needed):
                        break
                else:
                    if (
                        placed is not None
                        and len(self.clause_paths[cid] & placed.keys()) >= 2
                        and not self._consistent(cid, placed, per_value)
                    ):
                        continue
                    rules.add(rule)
        names = self.names
        return [names[rule] for rule in sorted(rules)]

    def _consistent(
        self, cid: int, placed: Placed, per_value: dict[int, list[tuple[Membership, set[int]]]]
    ) -> bool:
        """Whether the clause matches with all its fields taken from the same array elements."""
        choices: list[list[Membership]] = []
        for number, tids in self.clause_fields[cid]:
            entries = placed.get(number)
            if entries is None:
                continue  # not inside an array of objects: compatible with everything
            hits = per_value.get(number)
            if hits is None:
                hits = per_value[number] = [
                    (member, self.indexes[number].hits([value])) for value, member in entries
                ]
            members = [member for member, found in hits if not found.isdisjoint(tids)]
            if not members:
                return False
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
        return self._current().match(load_event(event))

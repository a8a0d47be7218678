"""One compiled pattern: validated clauses, the paths they read, and matching of a single event."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from stellwerk.patterns.conditions import Clause, Field
from stellwerk.patterns.flatten import Membership, Placed, Trie, Values, build_trie, collect
from stellwerk.patterns.flatten import consistent as _consistent
from stellwerk.patterns.parse import load, parse_loaded

_decoder = msgspec.json.Decoder()

Event = dict[str, Any] | bytes | bytearray | memoryview | str


def load_event(event: Event) -> Any:
    """The event as Python objects; JSON text is decoded once, here."""
    if isinstance(event, dict):
        return event
    try:
        return _decoder.decode(event)
    except msgspec.DecodeError as error:
        raise ValueError(f"event is not valid JSON: {error}") from None


def field_memberships(
    field: Field, number: int, values: Values, placed: Placed | None
) -> list[Membership] | None:
    """Where the field is satisfied: a membership per matching value, or None if nowhere."""
    found = values.get(number)
    if not found:
        return [()] if field.matches_absent else None
    if placed is not None and number in placed:
        hits = [member for value, member in placed[number] if field.matches(value)]
    else:
        hits = [()] if any(field.matches(value) for value in found) else []
    return hits or None


def clause_matches(
    clause: Sequence[tuple[Field, int]], values: Values, placed: Placed | None
) -> bool:
    choices: list[list[Membership]] = []
    for field, number in clause:
        hits = field_memberships(field, number, values, placed)
        if hits is None:
            return False
        if any(hits):
            choices.append(hits)
    return len(choices) < 2 or _consistent(choices)


class CompiledPattern:
    """A validated pattern that can test events on its own (the Matcher handles many at once)."""

    __slots__ = ("_numbered", "_trie", "clauses", "paths", "source")

    def __init__(self, source: dict[str, Any], clauses: Sequence[Clause]) -> None:
        self.source = source
        self.clauses: tuple[Clause, ...] = tuple(clauses)
        self.paths: tuple[str, ...] = tuple(
            dict.fromkeys(field.path for clause in self.clauses for field in clause)
        )
        numbers = {path: number for number, path in enumerate(self.paths)}
        self._numbered = tuple(
            tuple((field, numbers[field.path]) for field in clause) for clause in self.clauses
        )
        self._trie: Trie = build_trie(self.paths)

    def read(self, event: Event) -> tuple[Values, Placed | None]:
        """The values of this pattern's paths in the event."""
        return collect(load_event(event), self._trie)

    def numbered(self) -> tuple[tuple[tuple[Field, int], ...], ...]:
        return self._numbered

    def matches(self, event: Event) -> bool:
        values, placed = self.read(event)
        return any(clause_matches(clause, values, placed) for clause in self._numbered)

    def __repr__(self) -> str:
        return f"CompiledPattern({self.source!r})"


def compile_pattern(pattern: dict[str, Any] | str | bytes) -> CompiledPattern:
    """Validate a pattern and compile it; raises InvalidPatternError with EventBridge's reason."""
    source = load(pattern)
    return CompiledPattern(source, parse_loaded(source))

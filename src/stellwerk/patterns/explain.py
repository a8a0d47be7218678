"""Why a pattern does or does not match an event: the field, the condition, the event's value.

"Why didn't my rule match?" is the question EventBridge users ask most, so every clause of the
pattern (one per ``$or`` alternative) reports each field that failed and what the event held there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from stellwerk.patterns.compiled import CompiledPattern, Event, compile_pattern, field_memberships
from stellwerk.patterns.flatten import consistent


@dataclass(frozen=True, slots=True)
class FieldMismatch:
    """One field of a clause that the event did not satisfy."""

    field: str
    condition: Any
    found: list[Any] | None  # None: the event has no leaf value at this path
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "condition": self.condition,
            "found": self.found,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class ClauseExplanation:
    """One alternative of the pattern (there is one unless the pattern uses ``$or``)."""

    matched: bool
    mismatches: list[FieldMismatch] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"matched": self.matched, "mismatches": [m.to_dict() for m in self.mismatches]}


@dataclass(frozen=True, slots=True)
class Explanation:
    matched: bool
    clauses: list[ClauseExplanation]

    def to_dict(self) -> dict[str, Any]:
        return {"matched": self.matched, "clauses": [c.to_dict() for c in self.clauses]}

    def __str__(self) -> str:
        if self.matched:
            return "The event matches the pattern."
        lines = ["The event does not match the pattern."]
        for number, clause in enumerate(self.clauses, 1):
            if len(self.clauses) > 1:
                lines.append(f"Alternative {number} ($or):")
            for mismatch in clause.mismatches:
                lines.append(f"  {mismatch.field}: {mismatch.reason}")
        return "\n".join(lines)


def _reason(condition: Any, found: list[Any] | None, absent_ok: bool) -> str:
    wanted = f"the pattern asks for {_json(condition)}"
    if found is None:
        return f"the event has no value here; {wanted}"
    if absent_ok and len(condition) == 1:
        return f"the field must not exist, but the event has {_json(found)}"
    shown = _json(found[0]) if len(found) == 1 else f"the values {_json(found)}"
    return f"the event has {shown}, but {wanted}"


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def explain(pattern: CompiledPattern | dict[str, Any] | str | bytes, event: Event) -> Explanation:
    """Match ``event`` against ``pattern`` and say why not; raises InvalidPatternError."""
    compiled = pattern if isinstance(pattern, CompiledPattern) else compile_pattern(pattern)
    values, placed = compiled.read(event)
    clauses: list[ClauseExplanation] = []
    for clause in compiled.numbered():
        mismatches: list[FieldMismatch] = []
        choices = []
        for item, number in clause:
            hits = field_memberships(item, number, values, placed)
            if hits is None:
                found = values.get(number)
                reason = _reason(item.source, found, item.matches_absent)
                mismatches.append(FieldMismatch(item.path, item.source, found, reason))
            elif any(hits):
                choices.append(hits)
        if not mismatches and len(choices) >= 2 and not consistent(choices):
            paths = [item.path for item, number in clause if placed and number in placed]
            mismatches.append(
                FieldMismatch(
                    ", ".join(paths),
                    None,
                    None,
                    "each field matches, but only in different elements of the same array",
                )
            )
        clauses.append(ClauseExplanation(not mismatches, mismatches))
    return Explanation(any(clause.matched for clause in clauses), clauses)

"""The EventBridge pattern language: validate, compile, match many rules at once, explain."""

from stellwerk.patterns.compiled import CompiledPattern, compile_pattern
from stellwerk.patterns.errors import InvalidPatternError
from stellwerk.patterns.explain import ClauseExplanation, Explanation, FieldMismatch, explain
from stellwerk.patterns.matcher import Matcher

__all__ = [
    "ClauseExplanation",
    "CompiledPattern",
    "Explanation",
    "FieldMismatch",
    "InvalidPatternError",
    "Matcher",
    "compile_pattern",
    "explain",
]

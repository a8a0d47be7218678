"""The EventBridge pattern language: validate, compile, match many rules at once, explain."""

from stellwerk.patterns.compiled import CompiledPattern, compile_pattern
from stellwerk.patterns.errors import InvalidPatternError
from stellwerk.patterns.explain import ClauseExplanation, Explanation, FieldMismatch, explain
from stellwerk.patterns.matcher import Matcher
from stellwerk.patterns.parse import PatternObject

__all__ = [
    "ClauseExplanation",
    "CompiledPattern",
    "Explanation",
    "FieldMismatch",
    "InvalidPatternError",
    "Matcher",
    "PatternObject",
    "compile_pattern",
    "explain",
]

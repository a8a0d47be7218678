"""The EventBridge pattern language: validate, compile, match many rules at once, explain."""

from stellwerk.patterns.compiled import CompiledPattern, compile_pattern
from stellwerk.patterns.errors import InvalidPatternError

__all__ = ["CompiledPattern", "InvalidPatternError", "compile_pattern"]

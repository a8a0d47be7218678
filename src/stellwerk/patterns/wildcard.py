"""Wildcard values: parsing with EventBridge's escapes, and the "too complex" check.

EventBridge rejects wildcard rules whose automaton could be in too many states at once for some
event value (the README of aws/event-ruler calls this the machine's complexity). We estimate it the
same way: run the union of a field's wildcard patterns as a non-deterministic automaton over every
reachable set of states and take the largest set.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from stellwerk.patterns.errors import InvalidPatternError

STAR = None  # the token for `*`; every other token is one literal character
Token = str | None

# Largest number of simultaneously active automaton states EventBridge accepts for one field.
MAX_COMPLEXITY = 10
# Bounds the subset exploration, so a hostile pattern cannot make validation itself slow.
_MAX_STATE_SETS = 20_000


def tokenize(text: str, path: str) -> list[Token]:
    """Split a wildcard value into literal characters and stars, rejecting what AWS rejects."""
    tokens: list[Token] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "*":
            if tokens and tokens[-1] is STAR:
                raise InvalidPatternError(f"Consecutive wildcard characters at pos {index}", path)
            tokens.append(STAR)
        elif char == "\\":
            following = text[index + 1 : index + 2]
            if following not in ("*", "\\"):
                raise InvalidPatternError(f"Invalid escape character at pos {index}", path)
            tokens.append(following)
            index += 1
        else:
            tokens.append(char)
        index += 1
    return tokens


def to_regex(tokens: Sequence[Token]) -> re.Pattern[str]:
    body = "".join(".*" if token is STAR else re.escape(token) for token in tokens)
    return re.compile(body, re.DOTALL)


def complexity(patterns: Sequence[Sequence[Token]]) -> int:
    """The largest number of automaton states active at once for any input."""
    if not patterns:
        return 0

    def closure(states: set[tuple[int, int]]) -> frozenset[tuple[int, int]]:
        pending = list(states)
        while pending:
            which, pos = pending.pop()
            tokens = patterns[which]
            if pos < len(tokens) and tokens[pos] is STAR and (which, pos + 1) not in states:
                states.add((which, pos + 1))
                pending.append((which, pos + 1))
        return frozenset(states)

    # Patterns with the same literal start share their states up to the first star, as in
    # event-ruler's byte machine; after that every pattern's states are its own.
    first_star = [
        next((pos for pos, token in enumerate(tokens) if token is STAR), len(tokens))
        for tokens in patterns
    ]

    def size(states: frozenset[tuple[int, int]]) -> int:
        return len(
            {
                ("shared", tuple(patterns[which][:pos]))
                if pos <= first_star[which]
                else (which, pos)
                for which, pos in states
            }
        )

    alphabet = {token for tokens in patterns for token in tokens if token is not STAR}
    # One character no pattern names stands for all of them.
    alphabet.add("\x00" if "\x00" not in alphabet else "\x01")
    start = closure({(which, 0) for which in range(len(patterns))})
    seen = {start}
    pending = [start]
    largest = size(start)
    while pending:
        current = pending.pop()
        for char in alphabet:
            following: set[tuple[int, int]] = set()
            for which, pos in current:
                tokens = patterns[which]
                if pos >= len(tokens):
                    continue
                token = tokens[pos]
                if token is STAR:
                    following.add((which, pos))
                elif token == char:
                    following.add((which, pos + 1))
            if not following:
                continue
            state_set = closure(following)
            if state_set in seen:
                continue
            largest = max(largest, size(state_set))
            if largest > MAX_COMPLEXITY or len(seen) >= _MAX_STATE_SETS:
                return max(largest, MAX_COMPLEXITY + 1)
            seen.add(state_set)
            pending.append(state_set)
    return largest


def check_complexity(patterns: Sequence[Sequence[Token]], path: str) -> None:
    if complexity(patterns) > MAX_COMPLEXITY:
        raise InvalidPatternError(
            "Rule is too complex - try using fewer wildcard characters or fewer repeating "
            "character sequences after a wildcard character",
            path,
        )

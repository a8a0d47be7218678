"""The JSONPath subset EventBridge accepts in InputPath and InputPathsMap: ``$``, ``.key``,
``['key']`` and ``[index]``."""

from __future__ import annotations

import re
from typing import Any

from stellwerk.transform.errors import InvalidTransformerError

Step = str | int
_MISSING = object()
_DOT = re.compile(r"\.([^.\[\]]+)")
_INDEX = re.compile(r"\[(\d+)\]")
_QUOTED = re.compile(r"\[(?:'([^']*)'|\"([^\"]*)\")\]")


def parse_path(path: Any, where: str) -> tuple[Step, ...]:
    if not isinstance(path, str) or not path.startswith("$"):
        raise InvalidTransformerError(f"{where}: a path must be a string starting with $", where)
    steps: list[Step] = []
    position = 1
    while position < len(path):
        for pattern in (_DOT, _INDEX, _QUOTED):
            found = pattern.match(path, position)
            if found:
                break
        else:
            raise InvalidTransformerError(
                f"{where}: invalid JSONPath {path!r} at position {position}", where
            )
        if pattern is _INDEX:
            steps.append(int(found.group(1)))
        else:
            steps.append(next(group for group in found.groups() if group is not None))
        position = found.end()
    return tuple(steps)


def resolve(document: Any, steps: tuple[Step, ...]) -> Any:
    """The value at the path, or ``_MISSING`` when it is not there."""
    current = document
    for step in steps:
        if isinstance(step, int):
            if not isinstance(current, list) or step >= len(current):
                return _MISSING
            current = current[step]
        else:
            if not isinstance(current, dict) or step not in current:
                return _MISSING
            current = current[step]
    return current


def is_missing(value: Any) -> bool:
    return value is _MISSING

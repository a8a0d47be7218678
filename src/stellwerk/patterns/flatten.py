"""Reading from an event only the leaf values that some pattern asks for.

Patterns name dotted paths. A *path trie* maps every way of splitting such a path into event keys
(``detail.state`` is ``detail`` then ``state``, or one key ``detail.state``, as EventBridge joins
keys with dots) onto the path's number, so one walk over the event collects every value any rule
needs without looking at the rest of the event.

Arrays are crushed out as EventBridge does: every element is a value of the field. Values that sit
inside objects in arrays also carry their *membership*, the array elements they came from, so that
a clause can refuse to combine fields from different elements of the same array.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

# (id of the array, index in it) for each array of objects on the way to a value.
Membership = tuple[tuple[int, int], ...]
# event key -> (children or None, path number or -1)
Trie = dict[str, tuple["Trie | None", int]]
Values = dict[int, list[Any]]
Placed = dict[int, list[tuple[Any, Membership]]]

_MISSING = object()
# A path with more dots than this is only matched by its plain split, keeping the trie small.
_MAX_SPLIT_DOTS = 10


def _splits(path: str) -> Iterable[list[str]]:
    parts = path.split(".")
    if len(parts) - 1 > _MAX_SPLIT_DOTS:
        yield parts
        yield [path]
        return
    for mask in range(1 << (len(parts) - 1)):
        keys = [parts[0]]
        for index, part in enumerate(parts[1:]):
            if mask >> index & 1:
                keys[-1] = f"{keys[-1]}.{part}"
            else:
                keys.append(part)
        yield keys


def build_trie(paths: Sequence[str]) -> Trie:
    root: Trie = {}
    for number, path in enumerate(paths):
        for keys in _splits(path):
            node = root
            for depth, key in enumerate(keys):
                children, leaf = node.get(key, (None, -1))
                last = depth == len(keys) - 1
                if last:
                    node[key] = (children, number)
                else:
                    if children is None:
                        children = {}
                    node[key] = (children, leaf)
                    node = children
    return root


def collect(event: Any, trie: Trie) -> tuple[Values, Placed | None]:
    """The values of every trie path present in the event; membership only where it matters."""
    values: Values = {}
    placed: Placed = {}
    if type(event) is dict:
        _walk(event, trie, values, placed, ())
    return values, placed or None


def _walk(obj: dict[str, Any], trie: Trie, values: Values, placed: Placed, member: Membership) -> None:
    get = obj.get
    for key, (children, number) in trie.items():
        value = get(key, _MISSING)
        if value is _MISSING:
            continue
        kind = type(value)
        if kind is dict:
            if children is not None:
                _walk(value, children, values, placed, member)
        elif kind is list:
            _walk_array(value, children, number, values, placed, member)
        elif number >= 0:
            if member or number in placed:
                _place(number, value, member, values, placed)
            else:
                found = values.get(number)
                if found is None:
                    values[number] = [value]
                else:
                    found.append(value)


def _walk_array(
    array: list[Any],
    children: Trie | None,
    number: int,
    values: Values,
    placed: Placed,
    member: Membership,
) -> None:
    for index, item in enumerate(array):
        kind = type(item)
        if kind is dict:
            if children is not None:
                _walk(item, children, values, placed, (*member, (id(array), index)))
        elif kind is list:
            _walk_array(item, children, number, values, placed, (*member, (id(array), index)))
        elif number >= 0:
            # Scalars of one array are values of the same field, so their index never matters.
            if member or number in placed:
                _place(number, item, member, values, placed)
            else:
                values.setdefault(number, []).append(item)


def _place(number: int, value: Any, member: Membership, values: Values, placed: Placed) -> None:
    found = values.setdefault(number, [])
    if number not in placed:
        placed[number] = [(earlier, ()) for earlier in found]
    found.append(value)
    placed[number].append((value, member))


def compatible(first: Membership, second: Membership) -> bool:
    """True unless the two values come from different elements of one array."""
    if not first or not second:
        return True
    where = dict(first)
    return all(where.get(array, index) == index for array, index in second)


def consistent(choices: Sequence[Sequence[Membership]]) -> bool:
    """Whether one membership can be picked from each list so that all are compatible."""
    ordered = sorted(choices, key=len)

    def pick(depth: int, chosen: list[Membership]) -> bool:
        if depth == len(ordered):
            return True
        for candidate in ordered[depth]:
            if all(compatible(candidate, other) for other in chosen):
                chosen.append(candidate)
                if pick(depth + 1, chosen):
                    return True
                chosen.pop()
        return False

    return pick(0, [])

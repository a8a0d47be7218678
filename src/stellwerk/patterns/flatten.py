"""Reading from an event only the leaf values that some pattern asks for.

Patterns name dotted paths. A *path trie* of the paths' parts leads one walk over the event to
every value any rule needs, without looking at the rest of the event. EventBridge joins keys with
dots, so an event key ``"state.status"`` is found where ``state`` then ``status`` lead.

Arrays are crushed out as EventBridge does: every element is a value of the field. Values that sit
inside objects in arrays also carry their *membership*, the array elements they came from, so that
a clause can refuse to combine fields from different elements of the same array.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

# (id of the array, index in it) for each array of objects on the way to a value.
Membership = tuple[tuple[int, int], ...]
# event key -> (children or None, path number or -1)
Trie = dict[str, tuple["Trie | None", int]]
Values = dict[int, list[Any]]
Placed = dict[int, list[tuple[Any, Membership]]]

_MISSING = object()


def build_trie(paths: Sequence[str]) -> Trie:
    root: Trie = {}
    for number, path in enumerate(paths):
        keys = path.split(".")
        node = root
        for depth, key in enumerate(keys):
            children, leaf = node.get(key, (None, -1))
            if depth == len(keys) - 1:
                node[key] = (children, number)
            else:
                if children is None:
                    children = {}
                node[key] = (children, leaf)
                node = children
    return root


def _dotted(obj: dict[str, Any], trie: Trie) -> Iterator[tuple[Any, Trie | None, int]]:
    """Values under keys that contain dots, found where their parts lead in the trie."""
    for key, value in obj.items():
        if "." not in key:
            continue
        node: Trie | None = trie
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.get(part, (None, -1))[0] if node is not None else None
        if node is not None and parts[-1] in node:
            children, number = node[parts[-1]]
            yield value, children, number


def collect(event: Any, trie: Trie) -> tuple[Values, Placed | None]:
    """The values of every trie path present in the event; membership only where it matters."""
    values: Values = {}
    placed: Placed = {}
    if type(event) is dict:
        walk(event, trie, values, placed, ())
    return values, placed or None


def walk(
    obj: dict[str, Any], trie: Trie, values: Values, placed: Placed, member: Membership
) -> None:
    get = obj.get
    for key, (children, number) in trie.items():
        value = get(key, _MISSING)
        if value is not _MISSING:
            take(value, children, number, values, placed, member)
    if "." in "".join(obj):
        for value, children, number in _dotted(obj, trie):
            take(value, children, number, values, placed, member)


def take(
    value: Any,
    children: Trie | None,
    number: int,
    values: Values,
    placed: Placed,
    member: Membership,
) -> None:
    kind = type(value)
    if kind is dict:
        if children is not None:
            walk(value, children, values, placed, member)
    elif kind is list:
        for index, item in enumerate(value):
            # Scalars of one array are values of the same field, so their index never matters;
            # objects (and nested arrays) in it are told apart by the element they sit in.
            if type(item) is dict or type(item) is list:
                take(item, children, number, values, placed, (*member, (id(value), index)))
            else:
                take(item, children, number, values, placed, member)
    elif number >= 0:
        values.setdefault(number, []).append(value)
        if member:
            placed.setdefault(number, []).append((value, member))


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

"""A blocked Bloom filter: one 64-bit word per key, six bits set in it.

Checking a key costs one word read and a mask compare, and the mask depends only on the key, so
a key is checked against several filters for little more than against one. Filters are made
with at least 24 bits per key (sizes are powers of two: 24 to 48), which lets at most about
0.1 % of other keys through; each of those costs the writer a block look-up on disk per run of
the filter's epoch.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterable, Sequence
from typing import Final


def _triples(pairs: array[int]) -> array[int]:
    """`_TRIPLES`, made from the bytes of `pairs` (the loops in C: 262,144 words would take a
    quarter of a second one by one, at every start)."""
    if sys.byteorder != "little":  # the byte of a bit differs: one by one, as the words are
        return array("Q", (pairs[v & 4095] | (1 << (v >> 12)) for v in range(1 << 18)))
    words = pairs.tobytes()
    blocks = []
    for high in range(64):
        block = bytearray(words)
        column = slice(high // 8, None, 8)  # the byte that holds bit `high` of each word
        block[column] = block[column].translate(_SET_BIT[high % 8])
        blocks.append(block)
    return array("Q", b"".join(blocks))


# 12 bits per key (16 to 32 in practice) let 0.4-1 % of keys through each epoch's filter to a
# block look-up on disk per run of the epoch: a third of the writer's dedup look-ups for batches
# (issue 14, docs/architecture.md). Twice the memory (about 3 bytes per key in the window) buys
# a tenth of them. Stored filters of either size load alike: the mask does not depend on it.
BITS_PER_KEY: Final = 24
# For each bit of a byte, each byte value with that bit set.
_SET_BIT: Final = [bytes(v | (1 << bit) for v in range(256)) for bit in range(8)]
# Two bit positions (6 bits each) per 12 bits of the key's tag.
_PAIRS: Final = array("Q", ((1 << (v & 63)) | (1 << ((v >> 6) & 63)) for v in range(4096)))
# Three bit positions per 18 bits of the tag: the same six bits as three `_PAIRS` lookups, from
# two lookups (and smaller shifts and masks) per key. Index `high << 12 | low` holds
# `_PAIRS[low]` with bit `high` set too.
_TRIPLES: Final = _triples(_PAIRS)
_LOW18: Final = (1 << 18) - 1


def mask(tag: int) -> int:
    """The bits a key sets in its word, from the 36 low bits of its tag: six 6-bit fields, a
    bit position each."""
    return _TRIPLES[tag & _LOW18] | _TRIPLES[(tag >> 18) & _LOW18]


def masks(keys: Sequence[tuple[int, int]]) -> list[int]:
    """`mask` of the tag of each `(block, tag)` key: one comprehension, no call per key."""
    triples = _TRIPLES
    return [triples[tag & _LOW18] | triples[(tag >> 18) & _LOW18] for _block, tag in keys]


class Bloom:
    """A filter sized for `capacity` keys; keys are `(block, tag)`, two independent 64-bit ints."""

    __slots__ = ("_index", "words")

    def __init__(self, capacity: int, words: array[int] | None = None) -> None:
        if words is None:
            size = 1
            while size * 64 < capacity * BITS_PER_KEY:
                size <<= 1
            words = array("Q", bytes(8 * size))
        if len(words) & (len(words) - 1):
            raise ValueError("a Bloom filter's size must be a power of two words")
        self.words = words
        self._index = len(words) - 1

    @classmethod
    def from_bytes(cls, raw: bytes) -> Bloom:
        words = array("Q")
        words.frombytes(raw)
        return cls(0, words)

    def to_bytes(self) -> bytes:
        return self.words.tobytes()

    @property
    def capacity(self) -> int:
        """The keys it holds at about its designed false-positive rate."""
        return len(self.words) * 64 // BITS_PER_KEY

    def add_keys(self, keys: Iterable[tuple[int, int]]) -> None:
        """Add many `(block, tag)` keys (the loop inlined: it runs once per stored event)."""
        words, index, triples = self.words, self._index, _TRIPLES
        for block, tag in keys:
            words[block & index] |= triples[tag & _LOW18] | triples[(tag >> 18) & _LOW18]

    def add_masks(self, blocks: Iterable[int], bits: Iterable[int]) -> None:
        """Add many keys by their blocks and `masks`, as a group's filter check made them."""
        words, index = self.words, self._index
        for block, mask in zip(blocks, bits, strict=True):
            words[block & index] |= mask

    def add(self, block: int, bits: int) -> None:
        self.words[block & self._index] |= bits

    def may_hold(self, block: int, bits: int) -> bool:
        return self.words[block & self._index] & bits == bits

    def which_may_hold(
        self, keys: Sequence[tuple[int, int]], bits: Sequence[int], among: Iterable[int]
    ) -> list[int]:
        """The indexes `among` those of `keys` (with their `masks` in `bits`) that the filter
        may hold: one comprehension for a whole group of keys, no call per key."""
        words, index = self.words, self._index
        return [i for i in among if words[keys[i][0] & index] & bits[i] == bits[i]]

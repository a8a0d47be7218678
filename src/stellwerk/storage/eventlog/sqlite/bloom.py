"""A blocked Bloom filter: one 64-bit word per key, six bits set in it.

Checking a key costs one word read and a mask compare, and the mask depends only on the key, so
a key is checked against several filters for little more than against one. Twelve bits per key
give about 0.2 % false positives.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence
from typing import Final

BITS_PER_KEY: Final = 12
# Two bit positions (6 bits each) per 12 bits of the key's tag.
_PAIRS: Final = array("Q", ((1 << (v & 63)) | (1 << ((v >> 6) & 63)) for v in range(4096)))


def mask(tag: int) -> int:
    """The bits a key sets in its word, from the 36 low bits of its tag."""
    pairs = _PAIRS
    return pairs[tag & 4095] | pairs[(tag >> 12) & 4095] | pairs[(tag >> 24) & 4095]


def masks(keys: Sequence[tuple[int, int]]) -> list[int]:
    """`mask` of the tag of each `(block, tag)` key: one comprehension, no call per key."""
    pairs = _PAIRS
    return [
        pairs[tag & 4095] | pairs[(tag >> 12) & 4095] | pairs[(tag >> 24) & 4095]
        for _block, tag in keys
    ]


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
        words, index, pairs = self.words, self._index, _PAIRS
        for block, tag in keys:
            words[block & index] |= (
                pairs[tag & 4095] | pairs[(tag >> 12) & 4095] | pairs[(tag >> 24) & 4095]
            )

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

"""Write keys: what a tracker sends to name its source (Segment's write key, Snowplow's app id).

A write key looks like `wk_<id>_<secret>`: the id (16 hex digits) is public and finds the
source's row, the secret (192 random bits) is not stored. Only the SHA-256 digest of the whole
key is kept and compared in constant time, as API keys are. A write key sits in a shop's pages
for anyone to read, so it only names a source and grants nothing but sending events to it;
it is nonetheless long and random, so that nobody can guess another shop's.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Final

PREFIX: Final = "wk"
_ID_HEX: Final = 16
_HEX: Final = frozenset("0123456789abcdef")
MAX_LENGTH: Final = 128  # longer text is not a write key and is not even hashed


@dataclass(frozen=True, slots=True)
class NewWriteKey:
    key_id: str
    key: str
    digest: str


def generate() -> NewWriteKey:
    """A new write key; show `key` once and store `key_id` and `digest`."""
    key_id = secrets.token_hex(_ID_HEX // 2)
    key = f"{PREFIX}_{key_id}_{secrets.token_urlsafe(24)}"
    return NewWriteKey(key_id, key, digest(key))


def key_id(key: str) -> str | None:
    """The public id of a text shaped like a write key, or None."""
    prefix, sep1, rest = key.partition("_")
    found, sep2, secret = rest.partition("_")
    if (
        prefix != PREFIX
        or not (sep1 and sep2)
        or len(found) != _ID_HEX
        or not _HEX.issuperset(found)
        or len(secret) < 16
        or len(key) > MAX_LENGTH
    ):
        return None
    return found


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def matches(key_digest: str, stored: str) -> bool:
    return hmac.compare_digest(key_digest, stored)

"""API key format, generation and verification.

A key looks like `swk_<id>_<secret>`. The id (16 hex digits) is public and finds the stored row;
the secret (256 random bits) never leaves the caller. Only a SHA-256 digest of the whole key is
stored: the secret has full entropy, so a slow password hash would add latency and no safety.
Digests are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

PREFIX = "swk"
_ID_HEX = 16


class MalformedKeyError(ValueError):
    """The text is not shaped like a Stellwerk API key."""


@dataclass(frozen=True, slots=True)
class ApiKeyParts:
    key_id: str
    secret: str


def generate_key() -> tuple[str, str]:
    """A new key: returns `(key_id, key)`. Show `key` once; store only `hash_key(key)`."""
    key_id = secrets.token_hex(_ID_HEX // 2)
    return key_id, f"{PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"


def parse_key(key: str) -> ApiKeyParts:
    prefix, sep1, rest = key.partition("_")
    key_id, sep2, secret = rest.partition("_")
    if (
        prefix != PREFIX
        or not (sep1 and sep2)
        or len(key_id) != _ID_HEX
        or any(c not in "0123456789abcdef" for c in key_id)
        or len(secret) < 32
    ):
        raise MalformedKeyError("not a Stellwerk API key (expected swk_<id>_<secret>)")
    return ApiKeyParts(key_id=key_id, secret=secret)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def verify_key(key: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_key(key), stored_hash)

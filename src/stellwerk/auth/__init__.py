"""API keys and the principals they authenticate: pure code, no I/O."""

from stellwerk.auth.keys import (
    ApiKeyParts,
    MalformedKeyError,
    generate_key,
    hash_key,
    parse_key,
    verify_key,
)
from stellwerk.auth.principal import Principal, Scope

__all__ = [
    "ApiKeyParts",
    "MalformedKeyError",
    "Principal",
    "Scope",
    "generate_key",
    "hash_key",
    "parse_key",
    "verify_key",
]

"""How readers prove who they are: scrypt hashes of passwords, compared in constant time, and
HMAC-SHA256 signed tokens (session cookies, access links, form tokens, subscribers' links).

Pure functions and one small class, no I/O: `access.py` and `subscribers.py` build on them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from typing import Final

# Passwords: scrypt (RFC 7914) with 16 MiB of memory, about 50 ms a hash.
_SCRYPT_N: Final = 2**14
_SCRYPT_R: Final = 8
_SCRYPT_P: Final = 1


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32
    )
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def password_matches(password: str, stored: str) -> bool:
    """Whether `password` is the one `stored` was made of; constant time in the digest."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        tried = hashlib.scrypt(
            password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p), dklen=32
        )
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(tried, _unb64(digest))


class Signer:
    """Signs payloads with HMAC-SHA256: `base64url(payload).base64url(mac)`."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def sign(self, payload: bytes) -> str:
        mac = hmac.new(self._key, payload, hashlib.sha256).digest()
        return f"{_b64(payload)}.{_b64(mac)}"

    def open(self, token: str) -> bytes | None:
        """The payload of a token this signer made, or None for anything else."""
        if len(token) > 4096 or token.count(".") != 1:
            return None
        encoded, mac = token.split(".")
        try:
            payload = _unb64(encoded)
            expected = hmac.new(self._key, payload, hashlib.sha256).digest()
            if not hmac.compare_digest(expected, _unb64(mac)):
                return None
        except (ValueError, binascii.Error):
            return None
        return payload


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not text.isascii():
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

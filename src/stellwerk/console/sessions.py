"""Console sessions: the key a person logged in with, sealed in an expiring cookie.

The cookie holds the key itself, encrypted and authenticated (AES-GCM) under the console's own
key (`CapabilityContext.key("console-session")`), so that every request is admitted by the same
gate as the API: a key revoked anywhere ends its console sessions within the key cache's few
seconds, and a read key stays a read key. Only this server can read or make a cookie; the
browser cannot (HttpOnly). A form carries a token derived from the session's random nonce
(CSRF): a page of another site can neither read it nor guess it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

COOKIE: Final = "stellwerk_console"
LOGIN_COOKIE: Final = "stellwerk_console_login"
SESSION_SECONDS: Final = 12 * 3600
_NONCE_BYTES: Final = 12
_MAX_COOKIE: Final = 2048


class _Sealed(msgspec.Struct, array_like=True, frozen=True):
    key: str
    expires: float
    nonce: str


@dataclass(frozen=True, slots=True)
class Session:
    """An open session: the key it acts with, when it ends, and its forms' CSRF token."""

    key: str
    expires: float
    csrf: str


class Sessions:
    """Seals and opens session cookies; `clock` (seconds since the epoch) is movable for tests."""

    def __init__(
        self,
        key: bytes,
        *,
        seconds: float = SESSION_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._aead = AESGCM(key)
        self._mac = hmac.new(key, b"console csrf", hashlib.sha256).digest()
        self.seconds = seconds
        self.clock = clock

    def seal(self, key: str) -> tuple[str, Session]:
        """A new session for `key`: the cookie's value and the session."""
        sealed = _Sealed(key, self.clock() + self.seconds, _b64(os.urandom(16)))
        nonce = os.urandom(_NONCE_BYTES)
        value = _b64(nonce + self._aead.encrypt(nonce, msgspec.msgpack.encode(sealed), None))
        return value, self._session(sealed)

    def open(self, value: str | None) -> Session | None:
        """The session of a cookie this console sealed and that has not expired, else None."""
        if not value or len(value) > _MAX_COOKIE:
            return None
        try:
            raw = _unb64(value)
            plain = self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], None)
            sealed = msgspec.msgpack.decode(plain, type=_Sealed)
        except (ValueError, binascii.Error, InvalidTag, msgspec.DecodeError):
            return None
        if sealed.expires <= self.clock():
            return None
        return self._session(sealed)

    def token(self, nonce: str) -> str:
        """The CSRF token that goes with `nonce` (a session's, or the login form's)."""
        return _b64(hmac.new(self._mac, nonce.encode(), hashlib.sha256).digest())

    def token_valid(self, nonce: str | None, token: object) -> bool:
        if not nonce or not isinstance(token, str):
            return False
        return hmac.compare_digest(self.token(nonce), token)

    @staticmethod
    def token_valid_for(session: Session, token: object) -> bool:
        """Whether `token` is the CSRF token of `session`'s forms."""
        return isinstance(token, str) and hmac.compare_digest(session.csrf, token)

    def _session(self, sealed: _Sealed) -> Session:
        return Session(sealed.key, sealed.expires, self.token(sealed.nonce))

    @staticmethod
    def new_nonce() -> str:
        return _b64(os.urandom(16))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not text.isascii():
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

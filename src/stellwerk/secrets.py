"""Encryption at rest for the secrets Stellwerk keeps: connection credentials, signing secrets.

The master key is 32 random bytes, given as base64 in `STELLWERK_SECRET_KEY` (make one with
`openssl rand -base64 32`). Without it, an embedded-mode process creates one on first start and
keeps it in `<data-dir>/secret.key` (mode 0600); a scale-out deployment must set the variable, so
that every process decrypts what the others encrypted. Back the key up with the data: without it,
stored secrets cannot be read.

A sealed value looks like `swk1.<key id>.<base64url(nonce | AES-256-GCM ciphertext and tag)>`.
The version prefix and the key id let a later release rotate keys: `SecretBox` encrypts with its
current key and decrypts with any key it was given. The AES key is derived from the master key
(HKDF-SHA256), so the master key can later feed other derivations without reuse.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

ENV_VAR: Final = "STELLWERK_SECRET_KEY"
KEY_FILE: Final = "secret.key"
KEY_BYTES: Final = 32
VERSION: Final = "swk1"
_NONCE_BYTES: Final = 12
_INFO: Final = b"stellwerk secrets at rest v1"


class SecretKeyError(ValueError):
    """The master key is missing, malformed or kept unsafely; the message says how to fix it."""


class DecryptionError(ValueError):
    """A sealed value cannot be opened: another key sealed it, or it was altered."""


def decode_key(text: str, source: str = ENV_VAR) -> bytes:
    """The key bytes from base64 text (standard or URL-safe alphabet, padding optional)."""
    cleaned = text.strip()
    padded = cleaned + "=" * (-len(cleaned) % 4)
    try:
        key = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SecretKeyError(
            f"{source} is not base64; make a key with `openssl rand -base64 32`"
        ) from exc
    if len(key) != KEY_BYTES:
        raise SecretKeyError(
            f"{source} holds {len(key)} bytes, a key is {KEY_BYTES}; "
            "make one with `openssl rand -base64 32`"
        )
    return key


def load_or_create_key(data_dir: Path, env: Mapping[str, str], *, create: bool = True) -> bytes:
    """The master key: from `STELLWERK_SECRET_KEY`, else from the data directory's key file.

    With `create` (embedded mode) a missing key file is made, 0600, safely against a second
    process doing the same at the same moment: both end up with the one that was written first.
    """
    text = env.get(ENV_VAR)
    if text:
        return decode_key(text)
    path = data_dir / KEY_FILE
    if not path.exists():
        if not create:
            raise SecretKeyError(
                f"{ENV_VAR} is not set; processes that share a database must share a key "
                "(make one with `openssl rand -base64 32`)"
            )
        _create_key_file(path)
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretKeyError(
            f"{path} is readable by other users (mode {stat.S_IMODE(mode):o}); "
            f"run `chmod 600 {path}`"
        )
    return decode_key(path.read_text(encoding="ascii"), str(path))


def _create_key_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as file:
            file.write(base64.b64encode(os.urandom(KEY_BYTES)).decode("ascii") + "\n")
            file.flush()
            os.fsync(file.fileno())
        # link() refuses to replace: whoever links first wins, and nobody reads a half-written key.
        os.link(temporary, path)
    except FileExistsError:
        pass
    finally:
        temporary.unlink(missing_ok=True)


def derive_key(master: bytes, purpose: str) -> bytes:
    """A 32-byte key of its own for `purpose` (HKDF-SHA256 of the master key): signing session
    cookies, say. Each purpose gets a key no other use shares, and none reveals the master."""
    if len(master) != KEY_BYTES:
        raise SecretKeyError(f"a key is {KEY_BYTES} bytes, not {len(master)}")
    info = b"stellwerk derived key v1: " + purpose.encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(master)


def _derive(master: bytes) -> tuple[str, AESGCM]:
    if len(master) != KEY_BYTES:
        raise SecretKeyError(f"a key is {KEY_BYTES} bytes, not {len(master)}")
    aes_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(master)
    key_id = hmac.new(master, b"stellwerk key id", hashlib.sha256).hexdigest()[:8]
    return key_id, AESGCM(aes_key)


class SecretBox:
    """Seals and opens secrets with AES-256-GCM; `previous` keys still open older values."""

    __slots__ = ("_ciphers", "_current")

    def __init__(self, key: bytes, previous: Sequence[bytes] = ()) -> None:
        self._current = _derive(key)
        self._ciphers = dict([_derive(old) for old in previous])
        self._ciphers[self._current[0]] = self._current[1]

    @property
    def key_id(self) -> str:
        return self._current[0]

    def encrypt(self, plaintext: str, associated: str = "") -> str:
        """A sealed token for `plaintext`; `associated` (not secret) must match to open it."""
        key_id, cipher = self._current
        nonce = os.urandom(_NONCE_BYTES)
        sealed = cipher.encrypt(nonce, plaintext.encode(), _aad(key_id, associated))
        encoded = base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode("ascii")
        return f"{VERSION}.{key_id}.{encoded}"

    def decrypt(self, token: str, associated: str = "") -> str:
        """The plaintext of a token from `encrypt`; `DecryptionError` says why it cannot be."""
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != VERSION:
            raise DecryptionError(f"not a sealed secret (expected the {VERSION!r} format)")
        _, key_id, encoded = parts
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise DecryptionError(
                f"sealed with key {key_id}, but this process has key {self.key_id}: "
                f"{ENV_VAR} differs from the key that sealed it"
            )
        try:
            raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except (binascii.Error, ValueError) as exc:
            raise DecryptionError("sealed secret is corrupt (bad base64)") from exc
        if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != encoded:
            # Lenient base64 ignores spare bits; a changed character must not go unnoticed.
            raise DecryptionError("sealed secret is corrupt (not canonical base64)")
        if len(raw) < _NONCE_BYTES + 16:
            raise DecryptionError("sealed secret is corrupt (too short)")
        try:
            plain = cipher.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _aad(key_id, associated))
        except InvalidTag as exc:
            raise DecryptionError(
                "sealed secret failed authentication: it was altered, or belongs to another record"
            ) from exc
        return plain.decode()

    def __repr__(self) -> str:
        return f"SecretBox(key_id={self.key_id!r})"


def _aad(key_id: str, associated: str) -> bytes:
    return f"{VERSION}.{key_id}.{associated}".encode()

"""Key texts on their way to a peer site, encrypted under the pair's shared secret (pure, no I/O).

A key signs AWS SigV4 requests only where its text is known (a signature is an HMAC keyed by
it), so a site sends its peer the texts of its live keys beside their digests. They travel
inside the mirror snapshot as one sealed value: AES-256-GCM with a key derived from the pair's
secret by HKDF-SHA256 (a fresh random salt per message, so no two messages share a key), and
bound as associated data to the tenant and the direction (sending site, receiving site), so a
copy cannot be replayed to another tenant or back to its sender. The receiver checks each text
against its digest and seals it under its own secret key, as it seals its own keys.

A sealed value is `v1.<base64url(salt | nonce | ciphertext and tag)>`.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from typing import Final

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION: Final = "v1"
_SALT_BYTES: Final = 16
_NONCE_BYTES: Final = 12
_INFO: Final = b"stellwerk sites key texts v1"

_encode: Final = msgspec.json.Encoder(order="sorted").encode
_decode: Final = msgspec.json.Decoder(dict[str, str]).decode


class UnopenedKeys(ValueError):
    """Sealed key texts that do not open: another secret, another tenant or direction, altered
    or malformed. The message says which, never a key or the secret."""


def _aead(secret: str, salt: bytes) -> AESGCM:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_INFO).derive(
        secret.encode()
    )
    return AESGCM(derived)


def _bound(tenant: str, sender: str, receiver: str) -> bytes:
    return f"stellwerk-key-texts/{VERSION}\n{tenant}\n{sender}\n{receiver}".encode()


def seal_texts(
    secret: str, texts: Mapping[str, str], *, tenant: str, sender: str, receiver: str
) -> str:
    """The key texts (by key id) sealed for `receiver` under the pair's `secret`."""
    salt, nonce = os.urandom(_SALT_BYTES), os.urandom(_NONCE_BYTES)
    sealed = _aead(secret, salt).encrypt(
        nonce, _encode(dict(texts)), _bound(tenant, sender, receiver)
    )
    return f"{VERSION}." + base64.urlsafe_b64encode(salt + nonce + sealed).decode().rstrip("=")


def open_texts(
    secret: str, sealed: str, *, tenant: str, sender: str, receiver: str
) -> dict[str, str]:
    """The key texts `sender` sealed for `receiver`; `UnopenedKeys` when they do not open."""
    version, _, payload = sealed.partition(".")
    if version != VERSION:
        raise UnopenedKeys(f"key texts sealed as {version!r}, this site opens {VERSION!r}")
    try:
        raw = base64.b64decode(payload + "=" * (-len(payload) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise UnopenedKeys("the sealed key texts are not base64url") from None
    if len(raw) < _SALT_BYTES + _NONCE_BYTES + 16:
        raise UnopenedKeys("the sealed key texts are too short")
    salt, nonce = raw[:_SALT_BYTES], raw[_SALT_BYTES : _SALT_BYTES + _NONCE_BYTES]
    try:
        plain = _aead(secret, salt).decrypt(
            nonce, raw[_SALT_BYTES + _NONCE_BYTES :], _bound(tenant, sender, receiver)
        )
    except InvalidTag:
        raise UnopenedKeys(
            "the sealed key texts do not open with the pair's secret for this tenant and site"
        ) from None
    try:
        return _decode(plain)
    except (msgspec.ValidationError, msgspec.DecodeError):
        raise UnopenedKeys("the sealed key texts are not a map of key ids to keys") from None

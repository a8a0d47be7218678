"""Standard Webhooks signing (https://www.standardwebhooks.com): how receivers know it was us.

Every HTTP delivery carries `webhook-id` (the event id, also the receiver's idempotency key),
`webhook-timestamp` (Unix seconds) and `webhook-signature`: `v1,` and the base64 of
HMAC-SHA256 over `{id}.{timestamp}.{body}` keyed with the secret's bytes. A secret is `whsec_`
followed by the base64 of 24 to 64 random bytes, the form the spec and its libraries use.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from typing import Final

from stellwerk.rules import InvalidTargetError

SECRET_PREFIX: Final = "whsec_"  # noqa: S105 (the prefix, not a secret)
SECRET_BYTES: Final = 32
MIN_SECRET_BYTES: Final = 24
MAX_SECRET_BYTES: Final = 64


def generate_secret() -> str:
    """A fresh signing secret: `whsec_` and 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(os.urandom(SECRET_BYTES)).decode("ascii")


def parse_secret(secret: str, field: str = "secret") -> bytes:
    """The key bytes of a `whsec_` secret; `InvalidTargetError` naming `field` when malformed."""
    if not secret.startswith(SECRET_PREFIX):
        raise InvalidTargetError(field, f"a signing secret starts with {SECRET_PREFIX!r}")
    encoded = secret[len(SECRET_PREFIX) :]
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidTargetError(field, f"the part after {SECRET_PREFIX!r} is not base64") from exc
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise InvalidTargetError(
            field,
            f"a signing secret holds {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes, "
            f"this one {len(key)}",
        )
    return key


class WebhookSigner:
    """Signs request bodies with one secret; the HMAC key schedule is computed once."""

    __slots__ = ("_mac",)

    def __init__(self, secret: str) -> None:
        self._mac = hmac.new(parse_secret(secret), digestmod=hashlib.sha256)

    def signature(self, msg_id: str, timestamp: int, body: bytes) -> str:
        mac = self._mac.copy()
        mac.update(f"{msg_id}.{timestamp}.".encode())
        mac.update(body)
        return "v1," + base64.b64encode(mac.digest()).decode("ascii")

    def headers(self, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": self.signature(msg_id, timestamp, body),
        }

    def __repr__(self) -> str:
        return "WebhookSigner(<secret>)"

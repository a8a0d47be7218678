"""Standard Webhooks signing (https://www.standardwebhooks.com): how receivers know it was us.

Every HTTP delivery carries `webhook-id` (the event id, also the receiver's idempotency key),
`webhook-timestamp` (Unix seconds) and `webhook-signature`: `v1,` and the base64 of
HMAC-SHA256 over `{id}.{timestamp}.{body}` keyed with the secret's bytes. A secret is `whsec_`
followed by the base64 of 24 to 64 random bytes, the form the spec and its libraries use.

During a rotation's grace period the signature of the secret being retired follows the current
one, space-separated, as the spec allows: a receiver accepts the message if any signature
verifies, so it may switch secrets at any time within the grace period.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class RetiringSecret:
    """A target's secret before its last rotation: it signs too, for messages stamped before
    `until` (Unix seconds)."""

    secret: str
    until: float

    def __repr__(self) -> str:
        return f"RetiringSecret(<secret>, until={self.until})"


class WebhookSigner:
    """Signs request bodies with a secret (and a retiring one, until it expires); the HMAC key
    schedules are computed once, each delivery copies them."""

    __slots__ = ("_key", "_retiring", "_retiring_until", "_second", "_stamp")

    def __init__(self, secret: str, retiring: RetiringSecret | None = None) -> None:
        self._key = hmac.new(parse_secret(secret), digestmod=hashlib.sha256)
        self._retiring: hmac.HMAC | None = None
        self._retiring_until = 0.0
        if retiring is not None:
            self._retiring = hmac.new(
                parse_secret(retiring.secret, "previous_secret"), digestmod=hashlib.sha256
            )
            self._retiring_until = retiring.until
        self._second = -1  # the timestamp whose text `_stamp` is (deliveries share a second)
        self._stamp = ""

    def signature(self, msg_id: str, timestamp: int, body: bytes) -> str:
        signed = f"{msg_id}.{timestamp}.".encode() + body
        signature = _sign(self._key, signed)
        if self._retiring is not None and timestamp < self._retiring_until:
            return f"{signature} {_sign(self._retiring, signed)}"
        return signature

    def headers(self, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        if timestamp != self._second:
            self._second, self._stamp = timestamp, str(timestamp)
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": self._stamp,
            "webhook-signature": self.signature(msg_id, timestamp, body),
        }

    def __repr__(self) -> str:
        return "WebhookSigner(<secret>)"


def _sign(key: hmac.HMAC, signed: bytes) -> str:
    mac = key.copy()
    mac.update(signed)
    return "v1," + binascii.b2a_base64(mac.digest(), newline=False).decode("ascii")

"""Signed requests between paired sites: HMAC-SHA256 with the pair's shared secret over the
timestamp, the sending site, the tenant, the method, the path and the body (pure, no I/O).

A signature binds everything a receiver acts on, so a captured request cannot be pointed at
another tenant, another path or another body; the timestamp bounds how long it can be replayed.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Final

SITE: Final = "stellwerk-site"
TENANT: Final = "stellwerk-tenant"
TIMESTAMP: Final = "stellwerk-timestamp"
SIGNATURE: Final = "stellwerk-signature"
VERSION: Final = "v1"
# How far a request's timestamp may be from the receiver's clock: wider than any skew between
# two hosts that keep NTP time, narrow enough that a captured request soon goes stale.
MAX_SKEW_SECONDS: Final = 300


class BadSignature(ValueError):
    """A peer request that is not signed right; the message says what is wrong (never the
    secret or the expected signature)."""


def signature(
    secret: str, *, site: str, tenant: str, timestamp: int, method: str, path: str, body: bytes
) -> str:
    message = f"{timestamp}\n{site}\n{tenant}\n{method.upper()}\n{path}\n".encode() + body
    digest = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return f"{VERSION}={digest}"


def signed_headers(
    secret: str, *, site: str, tenant: str, timestamp: int, method: str, path: str, body: bytes
) -> dict[str, str]:
    """The headers that sign a request from `site` for `tenant`."""
    return {
        SITE: site,
        TENANT: tenant,
        TIMESTAMP: str(timestamp),
        SIGNATURE: signature(
            secret,
            site=site,
            tenant=tenant,
            timestamp=timestamp,
            method=method,
            path=path,
            body=body,
        ),
    }


def claimed(headers: Mapping[str, str]) -> tuple[str, str]:
    """The site and tenant a request says it comes from (to find the secret that checks it)."""
    site, tenant = headers.get(SITE), headers.get(TENANT)
    if not site or not tenant:
        raise BadSignature(f"the request has no {SITE} or {TENANT} header")
    return site, tenant


def verify(
    secret: str, headers: Mapping[str, str], *, method: str, path: str, body: bytes, now: float
) -> None:
    """Raise `BadSignature` unless the request is signed with `secret` and fresh."""
    site, tenant = claimed(headers)
    text = headers.get(TIMESTAMP, "")
    if not text.isdigit():
        raise BadSignature(f"the {TIMESTAMP} header is not a number of seconds")
    timestamp = int(text)
    if abs(now - timestamp) > MAX_SKEW_SECONDS:
        raise BadSignature(
            f"the request's timestamp is {now - timestamp:+.0f} s from this site's clock "
            f"(at most {MAX_SKEW_SECONDS} s either way)"
        )
    expected = signature(
        secret,
        site=site,
        tenant=tenant,
        timestamp=timestamp,
        method=method,
        path=path,
        body=body,
    )
    given = headers.get(SIGNATURE, "")
    if not any(hmac.compare_digest(expected, part.strip()) for part in given.split(",")):
        raise BadSignature("the signature does not match the pair's shared secret")

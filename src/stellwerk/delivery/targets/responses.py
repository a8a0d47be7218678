"""Reading what a receiver answered: `Retry-After`, and a short, safe excerpt of an error body."""

from __future__ import annotations

import datetime
import email.utils
from typing import Final

import aiohttp

from stellwerk.seams import EXCERPT_BYTES as HISTORY_EXCERPT_BYTES

# Enough of an error body to say what went wrong in the dead-letter entry, never the whole thing.
EXCERPT_BYTES: Final = 512
# Read at most this much of any answer; larger bodies cost the connection (it is closed, not kept).
READ_LIMIT_BYTES: Final = 64 * 1024


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a `Retry-After` value (delay-seconds or HTTP-date); None if absent.

    `now` is the wall-clock time in Unix seconds, the base of an HTTP-date. A date in the past
    means "now" (0.0); a value that is neither form is ignored (None), as RFC 9110 allows.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        # RFC 9110 dates are always GMT; `-0000` parses as "no zone", which means GMT here too.
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - now)


async def read_limited(response: aiohttp.ClientResponse) -> bytes:
    """The first `READ_LIMIT_BYTES` of the body; reading it lets the connection be kept alive."""
    return await response.content.read(READ_LIMIT_BYTES)


def excerpt(body: bytes) -> str:
    """A one-line, printable start of `body` for error messages."""
    text = body[:EXCERPT_BYTES].decode("utf-8", errors="replace")
    text = " ".join(text.split())
    return text + ("..." if len(body) > EXCERPT_BYTES else "")


def answer_excerpt(body: bytes) -> str:
    """The start of an answer's body as the delivery history keeps it: at most
    `seams.EXCERPT_BYTES` bytes, as text (an undecodable byte becomes U+FFFD)."""
    if not body:
        return ""
    return body[:HISTORY_EXCERPT_BYTES].decode("utf-8", errors="replace")


def describe_status(status: int, reason: str | None, body: bytes) -> str:
    """`HTTP 503 Service Unavailable: <the start of the body>`, for outcomes and errors."""
    text = f"HTTP {status}"
    if reason:
        text += f" {reason}"
    detail = excerpt(body)
    return f"{text}: {detail}" if detail else text

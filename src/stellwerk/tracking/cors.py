"""CORS for the collector's endpoints, per source.

A browser asks first (a preflight `OPTIONS`), without the write key, so the preflight can only
be told whether some source allows the page's origin; the request that follows carries the key
and is refused unless its own source allows the origin. Credentials are allowed (the browser
tracker's first-party cookie needs them), so the origin is echoed, never `*`.
"""

from __future__ import annotations

from typing import Final

ALLOWED_METHODS: Final = "POST, OPTIONS"
ALLOWED_HEADERS: Final = "Authorization, Content-Type, Content-Encoding"
MAX_AGE: Final = "600"


def answer_headers(origin: str) -> dict[str, str]:
    """The headers that let the page at `origin` read an answer."""
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Credentials": "true",
        "Vary": "Origin",
    }


def preflight_headers(origin: str) -> dict[str, str]:
    return {
        **answer_headers(origin),
        "Access-Control-Allow-Methods": ALLOWED_METHODS,
        "Access-Control-Allow-Headers": ALLOWED_HEADERS,
        "Access-Control-Max-Age": MAX_AGE,
    }

"""Request bodies of the collector's endpoints: read under a limit, gunzipped under the same
limit (a small gzip body can hold gigabytes), decoded as JSON."""

from __future__ import annotations

import zlib
from typing import Any, Final

import msgspec

from stellwerk.api import ApiError

_GZIP_WBITS: Final = 31  # zlib's way to say: a gzip header and trailer around deflate


def gunzip(body: bytes, limit: int) -> bytes:
    """The content of a gzip body, at most `limit` bytes of it, or `ApiError`."""
    inflater = zlib.decompressobj(_GZIP_WBITS)
    try:
        content = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise ApiError(400, "InvalidGzip", f"the body is not valid gzip: {exc}") from None
    if len(content) > limit or inflater.unconsumed_tail:
        raise ApiError(413, "PayloadTooLarge", f"the body is over {limit} bytes once decompressed")
    if not inflater.eof:
        raise ApiError(400, "InvalidGzip", "the body is not valid gzip: it ends early")
    return content


def decoded(body: bytes, encoding: str | None, limit: int) -> Any:
    """The JSON value of a body sent with `Content-Encoding: encoding`."""
    return json_of(content_of(body, encoding, limit))


def content_of(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The content of a body sent with `Content-Encoding: encoding`: gunzipped, or as it is."""
    coding = (encoding or "identity").strip().lower()
    if coding == "gzip":
        return gunzip(body, limit)
    if coding != "identity":
        raise ApiError(415, "UnsupportedMediaType", f"Content-Encoding {coding[:40]!r} is not gzip")
    return body


def json_of(body: bytes) -> Any:
    """The JSON value of a body's content, or 400."""
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise ApiError(400, "InvalidJson", f"the body is not valid JSON: {exc}") from None

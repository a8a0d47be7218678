"""Request bodies into msgspec structs, and JSON responses; errors name the bad field."""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from stellwerk.api.errors import ApiError
from stellwerk.service import checked_name

T = TypeVar("T")

_encoder = msgspec.json.Encoder()
_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}
_AT = re.compile(r" - at `(\$[^`]*)`$")


def json_response(
    content: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        _encoder.encode(content), status_code=status, headers=headers, media_type="application/json"
    )


def decode_json(body: bytes, type_: type[T]) -> T:
    """Decode and validate `body` as `type_`: 400 for malformed JSON, 422 naming the bad field."""
    decoder = _decoders.get(type_)
    if decoder is None:
        decoder = _decoders[type_] = msgspec.json.Decoder(type_)
    try:
        return decoder.decode(body)  # type: ignore[no-any-return]
    except msgspec.ValidationError as exc:
        message = str(exc)
        match = _AT.search(message)
        raise ApiError(
            422, "ValidationFailed", message, field=match.group(1) if match else None
        ) from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, "InvalidRequest", f"the body is not valid JSON: {exc}") from None


async def read_json(request: Request, type_: type[T], *, empty: T | None = None) -> T:
    """The request's JSON body as `type_`; `empty` stands in for an absent body when given."""
    body = await request.body()
    if not body.strip() and empty is not None:
        return empty
    content_type = request.headers.get("content-type", "application/json")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise ApiError(
            415, "UnsupportedMediaType", f"expected application/json, got {media_type or 'nothing'}"
        )
    return decode_json(body, type_)


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within `low..high`, or 400 naming it."""
    text = request.query_params.get(name)
    if text is None:
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise ApiError(
            400, "InvalidRequest", f"{name} must be an integer {low}..{high}", field=name
        )
    return int(text)


def path_name(request: Request, kind: str, param: str) -> str:
    """The path parameter `param`, checked as a name of a `kind` (400 naming it if not)."""
    value: str = request.path_params[param]
    return checked_name(kind, value, param)

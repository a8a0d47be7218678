"""Request bodies into msgspec structs, and JSON responses; errors name the bad field."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from stellwerk.api.errors import ApiError
from stellwerk.events import parse_rfc3339
from stellwerk.service import checked_name

T = TypeVar("T")

# A row id as the stores keep it: a 64-bit integer. Larger numbers name nothing and would not
# fit the stores' integers, so the decoder refuses them (422) before they reach one.
RowId = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]

# `{"ids": [...]}` or `{"all": true}`: the bodies that pick stored rows say so in the document,
# which msgspec's schema of the struct alone cannot (the handler checks it: `ids_or_all`).
IDS_OR_ALL = msgspec.Meta(
    extra_json_schema={
        "anyOf": [
            {"required": ["ids"], "properties": {"ids": {"minItems": 1}}},
            {"required": ["all"], "properties": {"all": {"const": True}}},
        ]
    }
)

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
        if message.startswith(_FLOAT_FOR_INT):
            # JSON Schema counts 2.0 as an integer, and so do clients generated from the
            # document; msgspec does not. The slow path for the rare body that needs it.
            whole = _with_whole_numbers_as_ints(body)
            if whole is not None:
                return decode_json(whole, type_)
        raise ApiError(
            422, "ValidationFailed", message, field=match.group(1) if match else None
        ) from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, "InvalidRequest", f"the body is not valid JSON: {exc}") from None


_FLOAT_FOR_INT = "Expected `int`, got `float`"


def _with_whole_numbers_as_ints(body: bytes) -> bytes | None:
    """`body` with every whole float (`2.0`, `1e3`) as an integer, or None if it has none.

    Where a float is expected an integer still decodes as one, so only values that are exact
    integers change; 2.5 stays 2.5 and is refused as before."""
    changed = False

    def whole(value: Any) -> Any:
        nonlocal changed
        if isinstance(value, float) and value.is_integer():
            changed = True
            return int(value)
        if isinstance(value, list):
            return [whole(item) for item in value]
        if isinstance(value, dict):
            return {key: whole(item) for key, item in value.items()}
        return value

    converted = whole(msgspec.json.decode(body))
    return _encoder.encode(converted) if changed else None


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


def query_time(request: Request, name: str) -> datetime | None:
    """An RFC 3339 time query parameter, or 400 naming it."""
    text = request.query_params.get(name)
    if text is None:
        return None
    try:
        return parse_rfc3339(text)
    except ValueError:
        raise ApiError(
            400, "InvalidRequest", f"{name} must be an RFC 3339 time", field=name
        ) from None


def path_name(request: Request, kind: str, param: str) -> str:
    """The path parameter `param`, checked as a name of a `kind` (400 naming it if not)."""
    value: str = request.path_params[param]
    return checked_name(kind, value, param)

"""OpenAPI 3.1 document of the HTTP API, generated from the msgspec types the handlers decode.

Routes describe themselves as `Operation`s; `build_openapi` turns them into one document. All
schemas come from a single `msgspec.json.schema_components` call, so a struct used by several
operations appears once under `components.schemas` and is referenced with `$ref` everywhere. The
JSON Schema msgspec emits is draft 2020-12, which is exactly OpenAPI 3.1's schema dialect.

Every 4xx and 5xx response without a type of its own gets the standard error body
(`{"error": "<Code>", "message": "..."}`, more fields allowed). With `standard_errors=True` the
errors any operation of its kind can answer are added too: 401 and 403 when it needs a key; 400,
413, 415 and 422 when it takes a body; 400 when it has path parameters; 500 always.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import msgspec

__all__ = ["DEFAULT_ERROR_SCHEMA", "SECURITY_SCHEME", "Operation", "Parameter", "build_openapi"]

OPENAPI_VERSION = "3.1.0"
SECURITY_SCHEME = "apiKey"
_REF_TEMPLATE = "#/components/schemas/{name}"
_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})

DEFAULT_ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "description": "The body of every error answer. Some errors add fields (`field`, `index`).",
    "type": "object",
    "properties": {
        "error": {"type": "string", "description": "Machine-readable error code."},
        "message": {"type": "string", "description": "What went wrong, for a human."},
    },
    "required": ["error", "message"],
    "additionalProperties": True,
}

# Starlette's path convertors and the schema of the values they accept.
_CONVERTOR_SCHEMAS: dict[str, dict[str, Any]] = {
    "str": {"type": "string"},
    "path": {"type": "string"},
    "int": {"type": "integer", "minimum": 0},
    "float": {"type": "number", "minimum": 0},
    "uuid": {"type": "string", "format": "uuid"},
}
_PATH_PARAM = re.compile(r"{([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z_]+))?}")


@dataclass(frozen=True)
class Parameter:
    """A path or query parameter described beyond its name.

    `type` is anything msgspec can describe, e.g. `Annotated[str, msgspec.Meta(pattern=...)]`, so
    the same type serves the handler and the document.
    """

    description: str = ""
    type: Any = str
    required: bool = False  # path parameters are always required


@dataclass(frozen=True)
class Operation:
    """One method on one path, as the document shows it.

    Types (`request_body`, `responses` values, `Parameter.type`) may be `msgspec.Struct`s or any
    other type msgspec can describe (`list[Bus]`, `dict[str, int]`); `None` means no body.
    `request_body` may also map content types to types, for a body whose shape depends on its
    content type (a CloudEvent, or a batch of them).
    """

    method: str
    path: str  # Starlette template; convertors such as `{id:int}` are turned into schemas
    summary: str
    tags: tuple[str, ...]
    scopes: tuple[str, ...]  # any one of these API key scopes is enough; () means public
    request_body: Any = None
    # False when the handler reads an absent body as an empty one (`read_json(..., empty=...)`).
    request_body_required: bool = True
    request_content_types: tuple[str, ...] = ("application/json",)
    responses: Mapping[int, Any] = field(default_factory=dict)
    path_params: Mapping[str, str | Parameter] = field(default_factory=dict)
    query_params: Mapping[str, str | Parameter] = field(default_factory=dict)
    description: str = ""
    operation_id: str | None = None
    deprecated: bool = False


def build_openapi(
    operations: Sequence[Operation],
    *,
    title: str,
    version: str,
    description: str = "",
    error_body: Any = None,
    standard_errors: bool = True,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document for `operations`, as a JSON-ready dict.

    `error_body` is the type of the standard error body; without it a generic `Error` schema is
    used. Raises `ValueError` for an operation that cannot be described (unknown method, a
    duplicate method and path or operationId, a parameter that is not in the path).
    """
    types = _TypeTable()
    error_ref = types.add(error_body) if error_body is not None else None
    for op in operations:
        for body in _request_bodies(op).values():
            if body is not None:
                types.add(body)
        for body in op.responses.values():
            if body is not None:
                types.add(body)
        for param in [*op.path_params.values(), *op.query_params.values()]:
            types.add(param.type if isinstance(param, Parameter) else str)
    schemas, components = msgspec.json.schema_components(types.items, ref_template=_REF_TEMPLATE)
    schema_of = types.resolver(schemas)

    if error_ref is None:
        if "Error" in components:
            raise ValueError("a type named 'Error' clashes with the default error schema")
        components["Error"] = DEFAULT_ERROR_SCHEMA
        error_schema: dict[str, Any] = {"$ref": _REF_TEMPLATE.format(name="Error")}
    else:
        error_schema = schemas[error_ref]

    paths: dict[str, dict[str, Any]] = {}
    tags: dict[str, None] = {}
    operation_ids: set[str] = set()
    for op in operations:
        method = op.method.lower()
        if method not in _METHODS:
            raise ValueError(f"{op.method} {op.path}: unknown HTTP method")
        path, path_parameters = _path_parameters(op, schema_of)
        item = paths.setdefault(path, {})
        if method in item:
            raise ValueError(f"{op.method.upper()} {path} is described twice")
        operation_id = op.operation_id or _operation_id(method, path)
        if operation_id in operation_ids:
            raise ValueError(f"operationId {operation_id!r} is used twice")
        operation_ids.add(operation_id)
        tags.update(dict.fromkeys(op.tags))
        item[method] = _operation(
            op, operation_id, path_parameters, schema_of, error_schema, standard_errors
        )

    document: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": version},
        "tags": [{"name": tag} for tag in tags],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.items())),
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A Stellwerk API key: `Authorization: Bearer <key>`. "
                    "Keys belong to one tenant and have a scope: ingest, read or admin.",
                }
            },
        },
    }
    if description:
        document["info"]["description"] = description
    return document


SchemaOf = Callable[[Any], dict[str, Any]]


class _TypeTable:
    """The distinct types of a document in first-seen order, for one schema_components call."""

    def __init__(self) -> None:
        self.items: list[Any] = []

    def add(self, tp: Any) -> int:
        # Equality, not hashing: Annotated types with unhashable metadata must work too.
        for index, known in enumerate(self.items):
            if known is tp or known == tp:
                return index
        self.items.append(tp)
        return len(self.items) - 1

    def resolver(self, schemas: Sequence[dict[str, Any]]) -> SchemaOf:
        def schema_of(tp: Any) -> dict[str, Any]:
            index = self.add(tp)
            if index >= len(schemas):
                raise AssertionError(f"{tp!r} was not collected before generating schemas")
            return schemas[index]

        return schema_of


def _request_bodies(op: Operation) -> dict[str, Any]:
    """The body's type per content type."""
    if op.request_body is None:
        return {}
    if isinstance(op.request_body, Mapping):
        return dict(op.request_body)
    return dict.fromkeys(op.request_content_types, op.request_body)


def _path_parameters(op: Operation, schema_of: SchemaOf) -> tuple[str, list[dict[str, Any]]]:
    """The OpenAPI form of a Starlette path template and its parameter objects."""
    parameters: list[dict[str, Any]] = []
    seen: set[str] = set()
    for match in _PATH_PARAM.finditer(op.path):
        name, convertor = match.group(1), match.group(2) or "str"
        seen.add(name)
        described = op.path_params.get(name, "")
        if isinstance(described, Parameter):
            text, schema = described.description, schema_of(described.type)
        else:
            if convertor not in _CONVERTOR_SCHEMAS:
                raise ValueError(f"{op.path}: unknown path convertor {convertor!r}")
            text, schema = described, _CONVERTOR_SCHEMAS[convertor]
        parameter: dict[str, Any] = {"name": name, "in": "path", "required": True}
        if text:
            parameter["description"] = text
        parameter["schema"] = schema
        parameters.append(parameter)
    unknown = sorted(set(op.path_params) - seen)
    if unknown:
        raise ValueError(f"{op.path}: path parameters {unknown} are not in the path")
    return _PATH_PARAM.sub(r"{\1}", op.path), parameters


def _operation_id(method: str, path: str) -> str:
    """`get /v1/buses/{bus}/archives` -> `get_v1_buses_by_bus_archives`."""
    words = [method]
    for segment in path.strip("/").split("/"):
        if not segment:
            continue
        if segment.startswith("{"):
            words += ["by", segment.strip("{}")]
        else:
            words.append(re.sub(r"[^A-Za-z0-9]+", "_", segment).strip("_"))
    return "_".join(word for word in words if word)


def _operation(
    op: Operation,
    operation_id: str,
    path_parameters: list[dict[str, Any]],
    schema_of: SchemaOf,
    error_schema: dict[str, Any],
    standard_errors: bool,
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "operationId": operation_id,
        "summary": op.summary,
        "tags": list(op.tags),
    }
    description = op.description
    if op.scopes:
        needs = " or ".join(f"`{scope}`" for scope in op.scopes)
        description = f"{description}\n\nNeeds an API key with scope {needs}.".strip()
        # One requirement object per scope: OpenAPI reads alternatives as "any one of".
        result["security"] = [{SECURITY_SCHEME: [scope]} for scope in op.scopes]
    else:
        result["security"] = []
    if description:
        result["description"] = description
    if op.deprecated:
        result["deprecated"] = True

    parameters = list(path_parameters)
    for name, described in op.query_params.items():
        param = described if isinstance(described, Parameter) else Parameter(described)
        query: dict[str, Any] = {"name": name, "in": "query", "required": param.required}
        if param.description:
            query["description"] = param.description
        query["schema"] = schema_of(param.type)
        parameters.append(query)
    if parameters:
        result["parameters"] = parameters

    if op.request_body is not None:
        result["requestBody"] = {
            "required": op.request_body_required,
            "content": {
                # A non-JSON content type (a binary-mode CloudEvent, say) carries any bytes.
                content_type: {
                    "schema": schema_of(body) if "json" in content_type and body is not None else {}
                }
                for content_type, body in _request_bodies(op).items()
            },
        }

    statuses: dict[int, Any] = dict(op.responses)
    if not any(status < 400 for status in statuses):
        statuses[200] = None
    if standard_errors:
        implied = [500]
        if op.scopes:
            implied += [401, 403]
        if op.request_body is not None:
            implied += [400, 413, 415, 422]
        if path_parameters:
            implied.append(400)
        for status in implied:
            statuses.setdefault(status, None)

    responses: dict[str, Any] = {}
    for status in sorted(statuses):
        body = statuses[status]
        response: dict[str, Any] = {"description": _status_phrase(status)}
        if body is not None:
            response["content"] = {"application/json": {"schema": schema_of(body)}}
        elif status >= 400:
            response["content"] = {"application/json": {"schema": error_schema}}
        responses[str(status)] = response
    result["responses"] = responses
    return result


def _status_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"Status {status}"

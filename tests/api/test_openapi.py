"""build_openapi: a valid OpenAPI 3.1 document from msgspec structs, checked by a real validator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import jsonschema_rs
import msgspec
import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from stellwerk.api.openapi import SECURITY_SCHEME, Operation, Parameter, build_openapi

BusName = Annotated[str, msgspec.Meta(pattern="^[A-Za-z0-9._-]{1,64}$")]


class Retry(msgspec.Struct):
    """How often and how long a delivery is retried."""

    max_attempts: int = 185
    max_age_seconds: int | None = None


class HttpTarget(msgspec.Struct, tag="http"):
    url: str
    retry: Retry = msgspec.field(default_factory=Retry)


class LogTarget(msgspec.Struct, tag="log"):
    level: Literal["debug", "info", "warning"] = "info"


class RuleInput(msgspec.Struct, kw_only=True):
    """A rule as a client sends it."""

    pattern: dict[str, Any]
    targets: list[HttpTarget | LogTarget]
    state: Literal["enabled", "disabled"] = "enabled"
    description: str | None = None
    labels: dict[str, str] = {}


class Rule(RuleInput, kw_only=True):
    name: str
    bus: BusName


class RuleList(msgspec.Struct):
    rules: list[Rule]
    next_token: str | None = None


class Accepted(msgspec.Struct):
    accepted: int
    failed: list[dict[str, Any]]


class ErrorBody(msgspec.Struct):
    error: str
    message: str
    field: str | None = None


RULE_PARAMS: dict[str, str | Parameter] = {
    "bus": Parameter("The bus, `[A-Za-z0-9._-]{1,64}`.", BusName),
    "rule": "The rule's name.",
}

OPERATIONS = [
    Operation("get", "/livez", "Is the process alive", ("health",), ()),
    Operation(
        "put",
        "/v1/buses/{bus}/rules/{rule}",
        "Create or replace a rule",
        ("rules",),
        ("admin",),
        request_body=RuleInput,
        responses={200: Rule, 201: Rule, 404: None, 409: ErrorBody},
        path_params=RULE_PARAMS,
    ),
    Operation(
        "get",
        "/v1/buses/{bus}/rules/{rule}",
        "Describe a rule",
        ("rules",),
        ("admin", "read"),
        responses={200: Rule, 404: None},
        path_params=RULE_PARAMS,
    ),
    Operation(
        "get",
        "/v1/buses/{bus}/rules",
        "List the rules of a bus",
        ("rules",),
        ("admin", "read"),
        responses={200: RuleList},
        path_params={"bus": Parameter("The bus.", BusName)},
        query_params={
            "limit": Parameter("Page size.", Annotated[int, msgspec.Meta(ge=1, le=1000)]),
            "next_token": "Where the previous page ended.",
        },
    ),
    Operation(
        "post",
        "/v1/buses/{bus}/events",
        "Put events",
        ("ingest",),
        ("ingest",),
        request_body=list[dict[str, Any]],
        request_content_types=(
            "application/cloudevents+json",
            "application/cloudevents-batch+json",
            "application/octet-stream",
        ),
        responses={202: Accepted, 429: None},
        path_params={"bus": "The bus."},
    ),
    Operation(
        "delete",
        "/v1/keys/{key_id:int}",
        "Revoke a key",
        ("keys",),
        ("admin",),
        responses={204: None},
    ),
]


def build(**kwargs: Any) -> dict[str, Any]:
    return build_openapi(OPERATIONS, title="Stellwerk", version="0.1.0", **kwargs)


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def operation(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    result: dict[str, Any] = document["paths"][path][method]
    return result


@pytest.mark.parametrize("error_body", [None, ErrorBody])
def test_document_is_valid_openapi_3_1(error_body: type | None) -> None:
    document = build(error_body=error_body)

    assert document["openapi"].startswith("3.1")
    OpenAPIV31SpecValidator(document).validate()
    # What /openapi.json serves must survive JSON encoding unchanged.
    assert json.loads(json.dumps(document)) == document


def test_the_validator_would_notice_a_broken_document() -> None:
    document = build()
    del operation(document, "get", "/livez")["responses"]["200"]["description"]

    with pytest.raises(OpenAPIValidationError):
        OpenAPIV31SpecValidator(document).validate()


def test_every_ref_points_at_a_component_and_each_struct_is_defined_once() -> None:
    document = build(error_body=ErrorBody)
    schemas = document["components"]["schemas"]

    targets = set(refs(document))
    assert targets
    assert all(ref.startswith("#/components/schemas/") for ref in targets)
    assert {ref.rsplit("/", 1)[1] for ref in targets} <= set(schemas)
    expected = {"Retry", "HttpTarget", "LogTarget", "RuleInput", "Rule", "RuleList", "Accepted"}
    assert expected | {"ErrorBody"} == set(schemas)
    assert "$defs" not in json.dumps(document)


def test_schemas_accept_what_msgspec_encodes_and_reject_what_it_refuses() -> None:
    document = build()
    put = operation(document, "put", "/v1/buses/{bus}/rules/{rule}")
    body_schema = put["requestBody"]["content"]["application/json"]["schema"]
    validator = jsonschema_rs.validator_for({**body_schema, "components": document["components"]})

    good = RuleInput(
        pattern={"source": ["shop"]},
        targets=[HttpTarget("https://example.com/hook"), LogTarget()],
        labels={"team": "checkout"},
    )
    assert validator.is_valid(json.loads(msgspec.json.encode(good)))
    bad: dict[str, Any] = {"pattern": {}, "targets": [{"type": "carrier-pigeon"}]}
    assert not validator.is_valid(bad)
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(json.dumps(bad), type=RuleInput)


def test_security_lists_the_allowed_scopes_as_alternatives() -> None:
    document = build()

    scheme = document["components"]["securitySchemes"][SECURITY_SCHEME]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    get = operation(document, "get", "/v1/buses/{bus}/rules/{rule}")
    assert get["security"] == [{SECURITY_SCHEME: ["admin"]}, {SECURITY_SCHEME: ["read"]}]
    assert "`admin` or `read`" in get["description"]
    assert operation(document, "get", "/livez")["security"] == []


def test_error_responses_use_the_error_body() -> None:
    document = build(error_body=ErrorBody)
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}

    for item in document["paths"].values():
        for op in item.values():
            for status, response in op["responses"].items():
                if int(status) >= 400:
                    assert response["content"]["application/json"]["schema"] == error_ref


def test_default_error_schema_when_no_error_type_is_given() -> None:
    document = build()

    error = document["components"]["schemas"]["Error"]
    assert error["required"] == ["error", "message"]
    livez = operation(document, "get", "/livez")
    assert livez["responses"]["500"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"
    }


def test_standard_errors_follow_the_shape_of_the_operation() -> None:
    document = build()

    def statuses(method: str, path: str) -> set[str]:
        return set(operation(document, method, path)["responses"])

    assert statuses("get", "/livez") == {"200", "500"}
    assert statuses("put", "/v1/buses/{bus}/rules/{rule}") == {
        "200", "201", "400", "401", "403", "404", "409", "413", "415", "422", "500",
    }  # fmt: skip
    assert statuses("delete", "/v1/keys/{key_id}") == {"204", "400", "401", "403", "500"}
    without = build_openapi(OPERATIONS[:1], title="t", version="1", standard_errors=False)
    assert set(without["paths"]["/livez"]["get"]["responses"]) == {"200"}


def test_parameters_carry_their_schemas() -> None:
    document = build()

    listing = operation(document, "get", "/v1/buses/{bus}/rules")
    by_name = {p["name"]: p for p in listing["parameters"]}
    assert by_name["bus"]["in"] == "path"
    assert by_name["bus"]["required"] is True
    assert by_name["bus"]["schema"]["pattern"] == "^[A-Za-z0-9._-]{1,64}$"
    assert by_name["limit"]["in"] == "query"
    assert by_name["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 1000}
    assert by_name["next_token"]["required"] is False

    revoke = operation(document, "delete", "/v1/keys/{key_id}")
    assert revoke["parameters"][0]["schema"]["type"] == "integer"


def test_request_content_types_share_the_schema_unless_not_json() -> None:
    document = build()

    content = operation(document, "post", "/v1/buses/{bus}/events")["requestBody"]["content"]
    structured = content["application/cloudevents+json"]["schema"]
    assert structured["type"] == "array"
    assert content["application/cloudevents-batch+json"]["schema"] == structured
    assert content["application/octet-stream"]["schema"] == {}


def test_a_body_may_differ_by_content_type_and_be_optional() -> None:
    op = Operation(
        "put",
        "/v1/things/{name}",
        "Put a thing",
        ("things",),
        ("admin",),
        request_body={"application/json": HttpTarget, "application/x-batch+json": list[HttpTarget]},
        request_body_required=False,
    )
    body = build_openapi([op], title="t", version="1")["paths"]["/v1/things/{name}"]["put"]
    assert body["requestBody"]["required"] is False
    content = body["requestBody"]["content"]
    assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/HttpTarget"}
    assert content["application/x-batch+json"]["schema"]["type"] == "array"


def test_operation_ids_are_derived_unique_and_overridable() -> None:
    document = build()

    ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
    assert operation(document, "get", "/v1/buses/{bus}/rules")["operationId"] == (
        "get_v1_buses_by_bus_rules"
    )
    named = Operation("get", "/livez", "Alive", ("health",), (), operation_id="livez")
    assert build_openapi([named], title="t", version="1")["paths"]["/livez"]["get"][
        "operationId"
    ] == ("livez")


@pytest.mark.parametrize(
    ("operations", "message"),
    [
        ([OPERATIONS[0], OPERATIONS[0]], "described twice"),
        ([Operation("fetch", "/x", "x", (), ())], "unknown HTTP method"),
        ([Operation("get", "/x", "x", (), (), path_params={"y": "why"})], "not in the path"),
        (
            [
                Operation("get", "/a", "a", (), (), operation_id="same"),
                Operation("get", "/b", "b", (), (), operation_id="same"),
            ],
            "used twice",
        ),
    ],
)
def test_operations_that_cannot_be_described_are_refused(
    operations: list[Operation], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        build_openapi(operations, title="t", version="1")

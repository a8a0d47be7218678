"""The served document says what the server checks, so that generated clients refuse it first.

The fuzz test (tests/fuzz/test_openapi_fuzz.py) finds mismatches by sending requests; these tests
pin the rules that fix whole classes of them, fast and without a server.
"""

from __future__ import annotations

import re
from typing import Any

import jsonschema_rs
import pytest

from stellwerk.api.bodies import decode_json
from stellwerk.api.errors import ApiError
from stellwerk.api.routes.target_secrets import RotateSecretInput
from stellwerk.app import openapi_document
from stellwerk.events import CLOUD_EVENT_SCHEMA, EventError, validate_event
from stellwerk.names import NAME_RULE, check_name

# Path parameters that are ids the server made: any string is accepted, an unknown one is a 404.
OPAQUE_IDS = {"id", "key_id", "incident", "maintenance"}


def _path_parameters(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (f"{method.upper()} {path}", parameter["name"], parameter["schema"])
        for path, item in document["paths"].items()
        for method, operation in item.items()
        for parameter in operation.get("parameters", [])
        if parameter["in"] == "path"
    ]


def test_every_path_parameter_says_which_values_the_server_takes() -> None:
    loose = [
        (where, name)
        for where, name, schema in _path_parameters(openapi_document())
        if schema == {"type": "string"} and name not in OPAQUE_IDS
    ]
    assert loose == []


def test_name_parameters_carry_the_rule_that_check_name_applies() -> None:
    patterns = {
        schema["pattern"]
        for _, _, schema in _path_parameters(openapi_document())
        if NAME_RULE in schema.get("pattern", "")
    }
    assert patterns == {f"^{NAME_RULE}$"}
    # The document's pattern and the server's check agree, at the edges too.
    pattern = re.compile(patterns.pop())
    for value in ["a", "A.b_c-9", "x" * 64]:
        assert pattern.search(value)
        assert check_name("bus", value) == value
    for value in ["", "x" * 65, "a/b", "ä", "a b"]:
        assert not pattern.search(value)


def test_a_whole_float_is_an_integer_as_json_schema_says() -> None:
    """Generated clients may send 60.0 where the document says integer; 60.5 is still refused."""
    body = decode_json(b'{"grace_seconds": 60.0, "secret": null}', RotateSecretInput)
    assert body.grace_seconds == 60
    assert type(body.grace_seconds) is int
    with pytest.raises(ApiError) as refused:
        decode_json(b'{"grace_seconds": 60.5}', RotateSecretInput)
    assert (refused.value.status, refused.value.extra["field"]) == (422, "$.grace_seconds")


EVENT = {"id": "1", "source": "s", "type": "t", "specversion": "1.0"}


@pytest.mark.parametrize(
    ("event", "valid"),
    [
        (EVENT, True),
        ({**EVENT, "time": "2026-12-05T00:00:00Z", "subject": "x", "data": {"a": 1}}, True),
        ({**EVENT, "data_base64": "aGk=", "partition": 7, "flag": True, "note": None}, True),
        ({**EVENT, "count": 7.0}, True),
        ({**EVENT, "tenant": {"any": "thing"}}, True),  # Stellwerk's own: dropped
        ({**EVENT, "id": ""}, False),
        ({**EVENT, "specversion": "0.3"}, False),
        ({k: v for k, v in EVENT.items() if k != "source"}, False),
        ({**EVENT, "time": "yesterday"}, False),
        ({**EVENT, "Upper": "x"}, False),
        ({**EVENT, "count": 2**31}, False),
        ({**EVENT, "count": 1.5}, False),
        ({**EVENT, "nested": {"a": 1}}, False),
        ({**EVENT, "data": 1, "data_base64": "aGk="}, False),
        ({**EVENT, "data_base64": "not base64!"}, False),
    ],
)
def test_the_documented_cloudevent_is_the_one_the_validator_takes(
    event: dict[str, Any], valid: bool
) -> None:
    schema = jsonschema_rs.validator_for(CLOUD_EVENT_SCHEMA, validate_formats=True)
    assert schema.is_valid(event) is valid
    try:
        validate_event(event)
    except EventError:
        accepted = False
    else:
        accepted = True
    assert accepted is valid


def test_a_whole_float_extension_is_kept_as_an_integer() -> None:
    extensions = validate_event({**EVENT, "count": 7.0}).extensions
    assert extensions == {"count": 7}
    assert type(extensions["count"]) is int

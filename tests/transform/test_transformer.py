"""The input transformer: paths, quoting, built-in variables, and rejection at save time."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from stellwerk.transform import InputTransformer, InvalidTransformerError

EVENT: dict[str, Any] = {
    "id": "e1",
    "type": "order.created",
    "data": {"instance": "i-1", "state": 'say "hi"', "n": 5, "items": [{"sku": "A"}, {"sku": "B"}]},
}


def test_json_template_quotes_values_as_eventbridge_does() -> None:
    transformer = InputTransformer(
        {
            "instance": "$.data.instance",
            "state": "$.data.state",
            "n": "$.data.n",
            "sku": "$.data.items[1].sku",
            "missing": "$.data.nope",
            "items": "$['data']['items']",
        },
        '{"instance": <instance>, "text": "<instance> is <state> (<n>)", "n": <n>, '
        '"sku": <sku>, "missing": <missing>, "items": <items>}',
    )
    out = json.loads(transformer.apply(EVENT))
    assert out == {
        "instance": "i-1",
        "text": 'i-1 is say "hi" (5)',
        "n": 5,
        "sku": "B",
        "missing": None,
        "items": [{"sku": "A"}, {"sku": "B"}],
    }


def test_string_template_and_builtins() -> None:
    transformer = InputTransformer(
        {"instance": "$.data.instance"},
        '"<instance> via <stellwerk.rule-name> at <stellwerk.ingestion-time>"',
    )
    when = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    out = transformer.apply(EVENT, rule_name="r1", ingestion_time=when)
    assert json.loads(out) == "i-1 via r1 at 2025-01-02T03:04:05Z"


def test_event_builtins() -> None:
    transformer = InputTransformer(
        {}, '{"whole": <stellwerk.event>, "text": <stellwerk.event.json>}'
    )
    out = json.loads(transformer.apply(EVENT))
    assert out["whole"] == EVENT
    assert json.loads(out["text"]) == EVENT


def test_input_path_and_no_transformation() -> None:
    assert json.loads(InputTransformer(input_path="$.data.items[0]").apply(EVENT)) == {"sku": "A"}
    assert json.loads(InputTransformer().apply(EVENT)) == EVENT
    spec = {"input_paths": {"t": "$.type"}, "input_template": "<t>"}
    assert InputTransformer.from_dict(spec).apply(EVENT) == '"order.created"'


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"input_paths": {"a": "data"}, "input_template": "<a>"}, "starting with \\$"),
        ({"input_paths": {"a": "$.a..b"}, "input_template": "<a>"}, "invalid JSONPath"),
        ({"input_paths": {"a": "$.a"}, "input_template": '{"x": <b>}'}, "does not define"),
        ({"input_paths": {"a": "$.a"}, "input_template": '{"<a>": 1}'}, "object key"),
        ({"input_paths": {"a": "$.a"}, "input_template": '{"x": <a>'}, "not valid JSON"),
        ({"input_paths": {"a b": "$.a"}, "input_template": "<a b>"}, "variable name"),
        ({"input_paths": {f"v{n}": "$.a" for n in range(101)}, "input_template": "x"}, "limit"),
        ({"input_path": "$.a", "input_template": "x"}, "cannot be combined"),
        ({"input_template": "x" * 8193}, "limit"),
    ],
)
def test_bad_transformers_are_rejected_when_saved(kwargs: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidTransformerError, match=reason):
        InputTransformer(**kwargs)

"""The rules API: save-time validation, tenant scoping, secrets shown to admins only."""

from __future__ import annotations

from typing import Any

from standardwebhooks import Webhook
from tests.conftest import RunningApp

from stellwerk.auth import Scope
from stellwerk.service import provision_tenant

RULE: dict[str, Any] = {
    "pattern": {"type": ["order.created"], "data": {"total": [{"numeric": [">", 100]}]}},
    "targets": [
        {
            "id": "hook",
            "type": "http",
            "url": "https://hooks.example.com/orders",
            "input_transformer": {
                "input_paths": {"total": "$.data.total"},
                "input_template": '{"amount": <total>}',
            },
            "retry_policy": {"maximum_retry_attempts": 3, "maximum_event_age_seconds": 600},
        },
        {"id": "audit", "type": "log"},
    ],
}


async def test_rules_round_trip_with_a_generated_secret(running_app: RunningApp) -> None:
    client, admin = running_app.client, running_app.admin
    created = await client.put("/v1/buses/default/rules/big-orders", headers=admin, json=RULE)
    assert created.status_code == 201, created.text
    rule = created.json()
    assert rule["state"] == "enabled"
    secret = rule["targets"][0]["secret"]
    assert secret.startswith("whsec_")
    Webhook(secret)  # a valid Standard Webhooks secret
    assert rule["targets"][0]["retry_policy"]["maximum_retry_attempts"] == 3

    again = await client.put(
        "/v1/buses/default/rules/big-orders", headers=admin, json={**RULE, "state": "disabled"}
    )
    assert again.status_code == 200
    assert again.json()["state"] == "disabled"
    listed = (await client.get("/v1/buses/default/rules", headers=admin)).json()["rules"]
    assert [r["name"] for r in listed] == ["big-orders"]

    tenant = await running_app.services.stores.control.get_tenant("default")
    assert tenant is not None
    _, read_key = await running_app.services.stores.control.create_key(tenant.id, Scope.READ)
    seen = await client.get(
        "/v1/buses/default/rules/big-orders", headers=running_app.auth(read_key)
    )
    assert seen.status_code == 200
    assert "secret" not in seen.json()["targets"][0]

    # Stored encrypted, not as given.
    async with running_app.services.stores.control.engine.connect() as conn:
        import sqlalchemy as sa

        stored = (await conn.execute(sa.text("SELECT targets FROM rules"))).scalar_one()
    assert secret not in stored

    assert (
        await client.delete("/v1/buses/default/rules/big-orders", headers=admin)
    ).status_code == 204
    assert (
        await client.get("/v1/buses/default/rules/big-orders", headers=admin)
    ).status_code == 404


async def test_invalid_rules_are_refused_at_save_time(running_app: RunningApp) -> None:
    client, admin = running_app.client, running_app.admin
    url = "/v1/buses/default/rules/r"
    hook = RULE["targets"][0]
    cases: list[tuple[dict[str, Any], int, str, str | None]] = [
        ({**RULE, "pattern": {"type": "x"}}, 400, "InvalidEventPatternException", "pattern"),
        (
            {**RULE, "targets": [{**hook, "input_transformer": {"input_template": "<nope>"}}]},
            400,
            "InvalidInputTransformer",
            "targets[0].input_transformer.input_template",
        ),
        ({**RULE, "targets": [{"id": "a", "type": "http"}]}, 400, "InvalidRule", "targets[0].url"),
        (
            {**RULE, "targets": [{"id": "a", "type": "log"}, {"id": "a", "type": "log"}]},
            400,
            "InvalidRule",
            "targets[1].id",
        ),
        (
            {**RULE, "targets": [{"id": f"t{i}", "type": "log"} for i in range(11)]},
            400,
            "InvalidRule",
            "targets",
        ),
        (
            {**RULE, "targets": [{**hook, "retry_policy": {"maximum_retry_attempts": 186}}]},
            400,
            "InvalidRule",
            "targets[0].retry_policy.maximum_retry_attempts",
        ),
        (
            {**RULE, "targets": [{**hook, "retry_policy": {"maximum_event_age_seconds": 59}}]},
            400,
            "InvalidRule",
            "targets[0].retry_policy.maximum_event_age_seconds",
        ),
        (
            {**RULE, "targets": [{"id": "b", "type": "bus", "bus": "nope"}]},
            400,
            "InvalidRule",
            "targets[0].bus",
        ),
        (
            {**RULE, "targets": [{"id": "f", "type": "function", "function": "no colon"}]},
            400,
            "InvalidRule",
            "targets[0].function",
        ),
        (
            {**RULE, "targets": [{"id": "l", "type": "log", "url": "https://x"}]},
            400,
            "InvalidRule",
            "targets[0].url",
        ),
        (
            {**RULE, "targets": [{"id": "l", "type": "log", "http_parameters": {}}]},
            400,
            "InvalidRule",
            "targets[0].http_parameters",
        ),
        (
            {**RULE, "targets": [{**hook, "http_parameters": {"path_values": ["a"]}}]},
            400,
            "InvalidRule",
            "targets[0].http_parameters.path_values",
        ),
        (
            {**RULE, "targets": [{**hook, "http_parameters": {"headers": {"Host": "x"}}}]},
            400,
            "InvalidRule",
            "targets[0].http_parameters.headers",
        ),
        (
            {**RULE, "targets": [{**hook, "http_parameters": {"headers": {"a b": "x"}}}]},
            400,
            "InvalidRule",
            "targets[0].http_parameters.headers",
        ),
        (
            {**RULE, "targets": [{**hook, "http_parameters": {"query": {"q": "$.data["}}}]},
            400,
            "InvalidRule",
            "targets[0].http_parameters.query",
        ),
        (
            {**RULE, "targets": [{**hook, "http_parameters": {"query": {"$.data.id": "q"}}}]},
            400,
            "InvalidRule",
            "targets[0].http_parameters.query",
        ),
        (
            {
                **RULE,
                "targets": [
                    {
                        **hook,
                        "input_transformer": {"input_path": "$.data"},
                        "http_parameters": {"headers": {"X-Id": "$.data.id"}},
                    }
                ],
            },
            400,
            "InvalidRule",
            "targets[0].http_parameters.headers",
        ),
        (
            {**RULE, "targets": [{**hook, "http_parameters": {"query": {"q": "a\nb"}}}]},
            422,
            "ValidationFailed",
            None,
        ),
        ({**RULE, "targets": [{"id": "x", "type": "smtp"}]}, 422, "ValidationFailed", None),
        ({**RULE, "state": "paused"}, 422, "ValidationFailed", "$.state"),
        ({**RULE, "sites": "both"}, 400, "InvalidRule", "sites"),
        ({**RULE, "sites": 1}, 422, "ValidationFailed", "$.sites"),
        (
            {"schedule": "rate(1 minute)", "targets": RULE["targets"][1:], "sites": "all"},
            400,
            "InvalidRule",
            "sites",
        ),
    ]
    for body, status, error, field in cases:
        response = await client.put(url, headers=admin, json=body)
        assert response.status_code == status, (body, response.text)
        assert response.json()["error"] == error, response.text
        if field is not None:
            assert response.json()["field"] == field, response.text
    assert (await client.put("/v1/buses/nope/rules/r", headers=admin, json=RULE)).status_code == 404
    assert (
        await client.put("/v1/buses/default/rules/a%20b", headers=admin, json=RULE)
    ).status_code == 400
    assert (await client.get("/v1/buses/default/rules", headers=admin)).json()["rules"] == []


async def test_a_rule_says_where_it_routes_and_keeps_it(running_app: RunningApp) -> None:
    client, admin = running_app.client, running_app.admin
    url = "/v1/buses/default/rules/regional"
    created = await client.put(url, headers=admin, json={**RULE, "sites": "all"})
    assert created.status_code == 201, created.text
    assert created.json()["sites"] == "all"
    assert (await client.get(url, headers=admin)).json()["sites"] == "all"
    # The default, `active`, is not shown (as other defaults are not).
    again = await client.put(url, headers=admin, json=RULE)
    assert "sites" not in again.json()
    assert "sites" not in (await client.get(url, headers=admin)).json()


async def test_rules_are_scoped_by_tenant(running_app: RunningApp) -> None:
    app = running_app
    other = await provision_tenant(app.services.stores.control, "other")
    theirs = app.auth(other.admin_key)
    assert (
        await app.client.put("/v1/buses/default/rules/r", headers=theirs, json=RULE)
    ).status_code == 201
    assert (await app.client.get("/v1/buses/default/rules/r", headers=app.admin)).status_code == 404
    assert (await app.client.get("/v1/buses/default/rules", headers=app.admin)).json()[
        "rules"
    ] == []
    assert (
        await app.client.delete("/v1/buses/default/rules/r", headers=app.admin)
    ).status_code == 404
    # A bus target must be a bus of the rule's own tenant.
    await app.client.put("/v1/buses/mine", headers=theirs)
    cross = {**RULE, "targets": [{"id": "b", "type": "bus", "bus": "mine"}]}
    assert (
        await app.client.put("/v1/buses/default/rules/x", headers=app.admin, json=cross)
    ).status_code == 400

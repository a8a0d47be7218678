"""`POST /v1/test-event-pattern` through the app."""

from __future__ import annotations

from typing import Any

from tests.conftest import RunningApp

EVENT = {"type": "order.created", "source": "urn:shop", "data": {"total": 50, "country": "DE"}}


async def test_match_no_match_and_why(running_app: RunningApp) -> None:
    client, admin = running_app.client, running_app.admin
    matched = await client.post(
        "/v1/test-event-pattern",
        headers=admin,
        json={"event": EVENT, "pattern": {"type": ["order.created"]}},
    )
    assert matched.status_code == 200
    assert matched.json()["result"] is True

    pattern = {"type": ["order.created"], "data": {"total": [{"numeric": [">", 100]}]}}
    missed = await client.post(
        "/v1/test-event-pattern", headers=admin, json={"event": EVENT, "pattern": pattern}
    )
    body = missed.json()
    assert body["result"] is False
    (clause,) = body["explanation"]["clauses"]
    (mismatch,) = clause["mismatches"]
    assert mismatch["field"] == "data.total"
    assert mismatch["found"] == [50]
    assert "data.total" in body["message"]

    as_text = await client.post(
        "/v1/test-event-pattern",
        headers=admin,
        json={"event": EVENT, "pattern": '{"source": [{"prefix": "urn:"}]}'},
    )
    assert as_text.json()["result"] is True


async def test_invalid_patterns_answer_like_eventbridge(running_app: RunningApp) -> None:
    client, admin = running_app.client, running_app.admin
    patterns: list[dict[str, Any]] = [
        {"type": "order.created"},
        {"type": []},
        {"data": {"n": [{"numeric": [">"]}]}},
    ]
    for pattern in patterns:
        response = await client.post(
            "/v1/test-event-pattern", headers=admin, json={"event": EVENT, "pattern": pattern}
        )
        assert response.status_code == 400, pattern
        assert response.json()["error"] == "InvalidEventPatternException"
        assert response.json()["message"].startswith("Event pattern is not valid")
    missing = await client.post("/v1/test-event-pattern", headers=admin, json={"event": EVENT})
    assert missing.status_code == 422
    ingest_only = await client.post(
        "/v1/test-event-pattern",
        headers=running_app.auth(running_app.bootstrap.ingest_key),
        json={"event": EVENT, "pattern": {"type": ["x"]}},
    )
    assert ingest_only.status_code == 403


async def test_an_envelope_rule_s_pattern_is_explained_over_the_envelope(
    running_app: RunningApp,
) -> None:
    # A rule made through the EventBridge API sees the stored CloudEvent in EventBridge's
    # envelope: `detail-type` for `type`, `detail` for `data`, the tenant as `account`.
    client, admin = running_app.client, running_app.admin
    pattern = {
        "detail-type": ["order.created"],
        "account": ["default"],
        "detail": {"total": [{"numeric": [">", 100]}]},
    }
    stored = {**EVENT, "specversion": "1.0", "id": "o-1", "awsregion": "eu-central-1"}
    missed = await client.post(
        "/v1/test-event-pattern",
        headers=admin,
        json={"event": stored, "pattern": pattern, "view": "eventbridge"},
    )
    assert missed.status_code == 200, missed.text
    body = missed.json()
    assert body["result"] is False
    (clause,) = body["explanation"]["clauses"]
    assert [(m["field"], m["found"]) for m in clause["mismatches"]] == [("detail.total", [50])]
    assert body["envelope"]["detail-type"] == "order.created"
    assert body["envelope"]["region"] == "eu-central-1"
    # Seen as the CloudEvent it is, the same pattern misses on every field.
    as_stored = await client.post(
        "/v1/test-event-pattern", headers=admin, json={"event": stored, "pattern": pattern}
    )
    fields = {m["field"] for m in as_stored.json()["explanation"]["clauses"][0]["mismatches"]}
    assert fields == {"detail-type", "account", "detail.total"}
    assert "envelope" not in as_stored.json()
    matched = await client.post(
        "/v1/test-event-pattern",
        headers=admin,
        json={
            "event": {**stored, "data": {"total": 150}},
            "pattern": pattern,
            "view": "eventbridge",
        },
    )
    assert matched.json()["result"] is True
    unknown = await client.post(
        "/v1/test-event-pattern",
        headers=admin,
        json={"event": stored, "pattern": pattern, "view": "aws"},
    )
    assert unknown.status_code == 422

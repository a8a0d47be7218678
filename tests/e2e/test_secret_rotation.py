"""Signing secrets through the API and on the wire: a save keeps them, a rotation overlaps them.

Receivers verify with the `standardwebhooks` library, as users' receivers do.
"""

from __future__ import annotations

import asyncio
import math
import time
from datetime import datetime
from typing import Any

import pytest
import sqlalchemy as sa
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from tests.conftest import RunningApp
from tests.e2e.conftest import Receiver
from tests.e2e.test_delivery import ORDER, put_rule, send

from stellwerk.auth import Scope
from stellwerk.delivery.targets import generate_secret

RULES = "/v1/buses/default/rules"


def rule_to(url: str, **hook: Any) -> dict[str, Any]:
    return {
        "pattern": {"source": ["urn:shop"]},
        "targets": [{"id": "hook", "type": "http", "url": url, **hook}],
    }


async def rotate(app: RunningApp, body: dict[str, Any] | None = None, target: str = "hook") -> Any:
    return await app.client.post(
        f"{RULES}/r/targets/{target}/rotate-secret", headers=app.admin, json=body
    )


async def test_saving_a_rule_without_secret_keeps_its_signing_secret(
    delivering_app: RunningApp, receiver_factory: Any
) -> None:
    app = delivering_app
    receiver: Receiver = await receiver_factory(None)
    first = (await put_rule(app, "r", rule_to(receiver.url)))["targets"][0]["secret"]
    # A routine edit (another pattern, a description) leaves the secret as it was ...
    edited = await put_rule(
        app, "r", {**rule_to(receiver.url), "description": "orders", "pattern": {"type": ["t"]}}
    )
    assert edited["targets"][0]["secret"] == first
    await put_rule(app, "r", rule_to(receiver.url))
    await send(app, {**ORDER, "id": "after-edit"})
    await receiver.wait_for(1)
    # ... so a receiver configured with it keeps verifying.
    headers, body = receiver.received[0]
    assert Webhook(first).verify(body, headers)["id"] == "after-edit"

    # Naming another secret replaces it at once: that is what the save says.
    chosen = generate_secret()
    replaced = await put_rule(app, "r", rule_to(receiver.url, secret=chosen))
    assert replaced["targets"][0]["secret"] == chosen
    assert "previous_secret" not in replaced["targets"][0]


async def test_during_a_rotation_either_secret_verifies_and_after_it_only_the_new_one(
    delivering_app: RunningApp, receiver_factory: Any
) -> None:
    app = delivering_app
    receiver: Receiver = await receiver_factory(None)
    old = (await put_rule(app, "r", rule_to(receiver.url)))["targets"][0]["secret"]
    rotated = await rotate(app, {"grace_seconds": 2})
    assert rotated.status_code == 200, rotated.text
    target = rotated.json()["targets"][0]
    new = target["secret"]
    assert new != old
    assert target["previous_secret"] == old
    expires = datetime.fromisoformat(target["previous_secret_expires_at"]).timestamp()

    await send(app, {**ORDER, "id": "in-grace"})
    await receiver.wait_for(1)
    headers, body = receiver.received[0]
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert Webhook(old).verify(body, headers)["id"] == "in-grace"
    assert Webhook(new).verify(body, headers)["id"] == "in-grace"

    # The grace period ends on the wall clock: a message stamped after it carries one signature.
    # (Waiting for the clock here is what the test is about, not a stand-in for an event.)
    await asyncio.sleep(max(0.0, math.ceil(expires) - time.time()))
    assert int(time.time()) >= expires
    await send(app, {**ORDER, "id": "after-grace"})
    await receiver.wait_for(2)
    headers, body = receiver.received[1]
    assert Webhook(new).verify(body, headers)["id"] == "after-grace"
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(body, headers)
    # And the rule, saved again, has forgotten the old secret.
    again = await put_rule(app, "r", rule_to(receiver.url))
    assert again["targets"][0]["secret"] == new
    assert "previous_secret" not in again["targets"][0]


async def test_rotation_through_the_api(delivering_app: RunningApp) -> None:
    app = delivering_app
    url = "http://127.0.0.1:9/hook"
    rule = {**rule_to(url), "targets": [*rule_to(url)["targets"], {"id": "audit", "type": "log"}]}
    await put_rule(app, "r", rule)
    chosen = generate_secret()
    rotated = await rotate(app, {"secret": chosen, "grace_seconds": 3600})
    assert rotated.json()["targets"][0]["secret"] == chosen
    previous = rotated.json()["targets"][0]["previous_secret"]
    # Both are stored sealed, as the secret always was.
    async with app.services.stores.control.engine.connect() as conn:
        stored = (await conn.execute(sa.text("SELECT targets FROM rules"))).scalar_one()
    assert chosen not in stored
    assert previous not in stored

    # A save in the grace period keeps both, with or without the fields GET showed.
    shown = (await app.client.get(f"{RULES}/r", headers=app.admin)).json()
    kept = await put_rule(app, "r", {"pattern": shown["pattern"], "targets": shown["targets"]})
    assert kept["targets"] == shown["targets"]
    assert (await put_rule(app, "r", rule))["targets"][0]["previous_secret"] == previous
    forged = {**shown["targets"][0], "previous_secret": generate_secret()}
    refused = await app.client.put(
        f"{RULES}/r", headers=app.admin, json={"pattern": shown["pattern"], "targets": [forged]}
    )
    assert refused.status_code == 400
    assert refused.json()["field"] == "targets[0].previous_secret"

    # Keys that may read rules see neither secret.
    tenant = await app.services.stores.control.get_tenant("default")
    assert tenant is not None
    _, read_key = await app.services.stores.control.create_key(tenant.id, Scope.READ)
    seen = (await app.client.get(f"{RULES}/r", headers=app.auth(read_key))).json()
    assert not {"secret", "previous_secret"} & set(seen["targets"][0])
    assert "previous_secret_expires_at" in seen["targets"][0]
    forbidden = await app.client.post(
        f"{RULES}/r/targets/hook/rotate-secret", headers=app.auth(read_key)
    )
    assert forbidden.status_code == 403

    # Without a body: a generated secret, a day of grace; with grace 0 the old one stops now.
    generated = (await rotate(app)).json()["targets"][0]
    assert generated["previous_secret"] == chosen
    assert generated["secret"].startswith("whsec_")
    Webhook(generated["secret"])
    at_once = (await rotate(app, {"grace_seconds": 0})).json()["targets"][0]
    assert "previous_secret" not in at_once

    cases: list[tuple[str, dict[str, Any] | None, int, str]] = [
        ("nope", None, 404, "NotFound"),
        ("audit", None, 400, "InvalidTarget"),
        ("hook", {"secret": "whsec_c2hvcnQ="}, 400, "InvalidTarget"),
        ("hook", {"grace_seconds": 8 * 86400}, 422, "ValidationFailed"),
        ("hook", {"grace": 5}, 422, "ValidationFailed"),
    ]
    for target, body, status, error in cases:
        answer = await rotate(app, body, target=target)
        assert (answer.status_code, answer.json()["error"]) == (status, error), answer.text
    missing = await app.client.post(f"{RULES}/gone/targets/hook/rotate-secret", headers=app.admin)
    assert missing.status_code == 404

"""Delivery history over the whole app: an event's attempts and a target's, to a real receiver."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from tests.conftest import RunningApp
from tests.e2e.conftest import Receiver
from tests.e2e.test_delivery import ORDER, put_rule, send
from tests.polling import eventually

from stellwerk.auth import Scope
from stellwerk.service import provision_tenant


async def test_an_events_attempts_show_status_answer_and_final_state(
    delivering_app: RunningApp, receiver_factory: Any
) -> None:
    app = delivering_app

    async def flaky(_request: web.Request, call: int) -> web.StreamResponse:
        if call == 1:
            return web.Response(status=503, text="<b>busy</b>", headers={"Retry-After": "0"})
        return web.Response(status=200, text="thanks")

    receiver: Receiver = await receiver_factory(flaky)
    await put_rule(
        app,
        "orders",
        {
            "pattern": {"type": ["order.created"]},
            "targets": [
                {"id": "hook", "type": "http", "url": receiver.url},
                {"id": "audit", "type": "log"},
            ],
        },
    )
    await put_rule(
        app, "other", {"pattern": {"type": ["nothing"]}, "targets": [{"id": "t", "type": "log"}]}
    )
    await send(app, {**ORDER, "id": "o/1", "data": {"total": 5}})
    await receiver.wait_for(1)

    async def history() -> Any:
        response = await app.client.get("/v1/buses/default/events/o/1", headers=app.admin)
        if response.status_code != 200:
            return None
        found = response.json()
        states = {t["target"]: t["state"] for t in found["targets"]}
        return found if states == {"hook": "delivered", "audit": "delivered"} else None

    found = await eventually(history, what="the event's history with both targets delivered")
    assert found["id"] == "o/1"
    assert found["event"]["data"] == {"total": 5}
    assert found["rules"] == ["orders"]
    hook = next(t for t in found["targets"] if t["target"] == "hook")
    summary = [(a["attempt"], a["outcome"], a["status"], a["excerpt"]) for a in hook["attempts"]]
    assert summary == [(1, "retrying", 503, "<b>busy</b>"), (2, "delivered", 200, "thanks")]
    assert hook["attempts"][0]["error"].startswith("HTTP 503")
    assert hook["attempts"][1]["error"] is None
    assert all(a["duration_ms"] >= 0 for a in hook["attempts"])

    page = await app.client.get(
        "/v1/buses/default/rules/orders/targets/hook/attempts",
        params={"outcome": "retrying", "since": "2000-01-01T00:00:00Z"},
        headers=app.admin,
    )
    assert page.status_code == 200
    assert [a["status"] for a in page.json()["attempts"]] == [503]
    assert page.json()["next_after"] is None
    first = await app.client.get(
        "/v1/buses/default/rules/orders/targets/hook/attempts",
        params={"limit": "1"},
        headers=app.admin,
    )
    after = first.json()["next_after"]
    assert after == first.json()["attempts"][0]["id"]
    rest = await app.client.get(
        "/v1/buses/default/rules/orders/targets/hook/attempts",
        params={"after": str(after)},
        headers=app.admin,
    )
    assert [a["attempt"] for a in rest.json()["attempts"]] == [2]


async def test_history_is_the_keys_tenants_and_bad_queries_are_named(
    delivering_app: RunningApp,
) -> None:
    app = delivering_app
    await put_rule(
        app,
        "orders",
        {"pattern": {"type": ["order.created"]}, "targets": [{"id": "t", "type": "log"}]},
    )
    await send(app, {**ORDER, "id": "mine"})

    async def delivered() -> bool:
        response = await app.client.get("/v1/buses/default/events/mine", headers=app.admin)
        return response.status_code == 200

    await eventually(delivered, what="the event's history")
    other = await provision_tenant(app.services.stores.control, "other")
    theirs = await app.client.get(
        "/v1/buses/default/events/mine", headers=app.auth(other.admin_key)
    )
    assert theirs.status_code == 404
    assert theirs.json()["error"] == "NotFound"
    tenant = await app.services.stores.control.get_tenant("default")
    assert tenant is not None
    _, read_key = await app.services.stores.control.create_key(tenant.id, Scope.READ)
    assert (
        await app.client.get("/v1/buses/default/events/mine", headers=app.auth(read_key))
    ).status_code == 200
    ingest = app.auth(app.bootstrap.ingest_key)
    assert (
        await app.client.get("/v1/buses/default/events/mine", headers=ingest)
    ).status_code == 403
    assert (
        await app.client.get("/v1/buses/default/events/unknown", headers=app.admin)
    ).status_code == 404
    assert (
        await app.client.get("/v1/buses/nobus/events/mine", headers=app.admin)
    ).status_code == 404

    attempts = "/v1/buses/default/rules/orders/targets/t/attempts"
    for params, field in [
        ({"outcome": "maybe"}, "outcome"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-13-01T00:00:00Z"}, "until"),
        ({"limit": "0"}, "limit"),
        ({"after": "-1"}, "after"),
    ]:
        refused = await app.client.get(attempts, params=params, headers=app.admin)
        assert refused.status_code == 400, params
        assert refused.json()["field"] == field
    bad_target = await app.client.get(
        "/v1/buses/default/rules/orders/targets/b%20d/attempts", headers=app.admin
    )
    assert bad_target.status_code == 400
    none = await app.client.get(
        "/v1/buses/default/rules/orders/targets/gone/attempts", headers=app.admin
    )
    assert none.json() == {"attempts": [], "next_after": None}


async def test_an_event_whose_id_is_stream_is_found_beside_the_live_tail(
    delivering_app: RunningApp,
) -> None:
    app = delivering_app
    await put_rule(
        app,
        "orders",
        {"pattern": {"type": ["order.created"]}, "targets": [{"id": "t", "type": "log"}]},
    )
    await send(app, {**ORDER, "id": "stream", "data": {"total": 1}})
    url = "/v1/buses/default/events/stream"
    as_json = {**app.admin, "Accept": "application/json"}

    async def history() -> Any:
        response = await app.client.get(url, headers=as_json)
        return response.json() if response.status_code == 200 else None

    found = await eventually(history, what="the history of the event `stream`")
    assert (found["id"], found["event"]["data"]) == ("stream", {"total": 1})
    assert [t["state"] for t in found["targets"]] == ["delivered"]
    # Anything else asked of the URL is the live tail's: its own check of `after` answers.
    for accept in ("text/event-stream", "*/*", "application/json, text/event-stream"):
        tail = await app.client.get(
            url, params={"after": "x"}, headers={**app.admin, "Accept": accept}
        )
        assert tail.status_code == 400, accept
        assert tail.json()["field"] == "after"
    other = await provision_tenant(app.services.stores.control, "other")
    theirs = await app.client.get(
        url, headers={**app.auth(other.admin_key), "Accept": "application/json"}
    )
    assert theirs.status_code == 404


async def test_redeliver_sends_a_delivered_event_again_to_its_targets(
    delivering_app: RunningApp, receiver_factory: Any
) -> None:
    app = delivering_app
    receiver: Receiver = await receiver_factory(None)
    # Sent first, so at position 1; no rule matches it, so it has no history.
    await send(app, {**ORDER, "id": "lonely", "type": "order.cancelled"})
    await put_rule(
        app,
        "orders",
        {
            "pattern": {"type": ["order.created"]},
            "targets": [
                {"id": "hook", "type": "http", "url": receiver.url},
                {"id": "audit", "type": "log"},
            ],
        },
    )
    await send(app, {**ORDER, "id": "o/2", "data": {"total": 7}})
    await receiver.wait_for(1)
    url = "/v1/buses/default/events/o/2"

    async def attempts_of(count: int) -> Any:
        response = await app.client.get(url, headers=app.admin)
        if response.status_code != 200:
            return None
        found = {t["target"]: t for t in response.json()["targets"]}
        done = all(
            len(found.get(t, {}).get("attempts", [])) == count and found[t]["state"] == "delivered"
            for t in ("hook", "audit")
        )
        return found if done else None

    await eventually(lambda: attempts_of(1), what="both targets delivered once")

    # No body: every target the history names, although both were delivered.
    again = await app.client.post(f"{url}/redeliver", headers=app.admin)
    assert again.status_code == 202, again.text
    assert again.json()["id"] == "o/2"
    assert sorted(t["target"] for t in again.json()["targets"]) == ["audit", "hook"]
    await receiver.wait_for(2)
    assert b'"total":7' in receiver.received[1][1]
    await eventually(lambda: attempts_of(2), what="both targets delivered twice")

    # One target of one rule.
    one = await app.client.post(
        f"{url}/redeliver", headers=app.admin, json={"rule": "orders", "target": "hook"}
    )
    assert one.status_code == 202, one.text
    assert one.json()["targets"] == [{"rule": "orders", "target": "hook"}]
    await receiver.wait_for(3)

    # An event no rule matched: found by its position, sent to the rule named.
    lonely = "/v1/buses/default/events/lonely/redeliver"
    unnamed = await app.client.post(lonely, headers=app.admin, json={"position": 1})
    assert unnamed.status_code == 400
    assert unnamed.json()["field"] == "rule"
    sent = await app.client.post(
        lonely, headers=app.admin, json={"position": 1, "rule": "orders", "target": "hook"}
    )
    assert sent.status_code == 202, sent.text
    await receiver.wait_for(4)
    assert b'"id":"lonely"' in receiver.received[3][1]

    # Refusals, each naming the problem.
    other = await provision_tenant(app.services.stores.control, "other")
    tenant = await app.services.stores.control.get_tenant("default")
    assert tenant is not None
    _, read_key = await app.services.stores.control.create_key(tenant.id, Scope.READ)
    for headers, body, status in [
        (app.auth(other.admin_key), None, 404),  # another tenant's event
        (app.auth(read_key), None, 403),
        (app.admin, {"rule": "orders", "target": "gone"}, 404),
        (app.admin, {"rule": "gone"}, 404),
        (app.admin, {"target": "hook"}, 400),
        (app.admin, {"position": 0}, 422),
        (app.admin, {"colour": "red"}, 422),
    ]:
        refused = await app.client.post(f"{url}/redeliver", headers=headers, json=body)
        assert refused.status_code == status, (body, refused.text)
    wrong = await app.client.post(
        "/v1/buses/default/events/unknown/redeliver",
        headers=app.admin,
        json={"position": 2, "rule": "orders"},
    )
    assert wrong.status_code == 404  # position 2 holds another event
    assert len(receiver.received) == 4

"""The admin API over the whole app: tenant isolation, key scopes, revocation, every error path."""

from __future__ import annotations

from collections.abc import AsyncIterator

import sqlalchemy as sa
from tests.conftest import RunningApp

from stellwerk.auth import Scope
from stellwerk.service import provision_tenant


async def test_tenant_isolation(running_app: RunningApp) -> None:
    app = running_app
    other = await provision_tenant(app.services.stores.control, "other")
    theirs = app.auth(other.admin_key)

    assert (await app.client.put("/v1/buses/orders", headers=app.admin, json={})).status_code == 201
    assert (await app.client.put("/v1/buses/secret", headers=theirs, json={})).status_code == 201

    mine = (await app.client.get("/v1/buses", headers=app.admin)).json()
    assert [b["name"] for b in mine["buses"]] == ["default", "orders"]
    seen = (await app.client.get("/v1/buses", headers=theirs)).json()
    assert [b["name"] for b in seen["buses"]] == ["default", "secret"]
    # The other tenant's bus is invisible, not forbidden: it does not exist for this key.
    response = await app.client.get("/v1/buses/secret", headers=app.admin)
    assert response.status_code == 404
    assert response.json()["error"] == "NotFound"
    assert (await app.client.delete("/v1/buses/secret", headers=app.admin)).status_code == 404
    assert (await app.client.get("/v1/buses/secret", headers=theirs)).status_code == 200
    keys = (await app.client.get("/v1/keys", headers=theirs)).json()["keys"]
    mine_ids = {
        k["id"] for k in (await app.client.get("/v1/keys", headers=app.admin)).json()["keys"]
    }
    assert not mine_ids & {k["id"] for k in keys}
    revoke_theirs = await app.client.delete(f"/v1/keys/{keys[0]['id']}", headers=app.admin)
    assert revoke_theirs.status_code == 404


async def test_scopes(running_app: RunningApp) -> None:
    app = running_app
    tenant = await app.services.stores.control.get_tenant("default")
    assert tenant is not None
    _, read_key = await app.services.stores.control.create_key(tenant.id, Scope.READ)
    reader = app.auth(read_key)
    ingester = app.auth(app.bootstrap.ingest_key)

    assert (await app.client.get("/v1/buses", headers=reader)).status_code == 200
    assert (await app.client.get("/v1/buses/default", headers=reader)).status_code == 200
    denied = await app.client.put("/v1/buses/x", headers=reader, json={})
    assert denied.status_code == 403
    assert denied.json()["error"] == "Forbidden"
    assert "needs admin" in denied.json()["message"]
    assert (await app.client.get("/v1/buses", headers=ingester)).status_code == 403
    assert (await app.client.delete("/v1/buses/default", headers=ingester)).status_code == 403
    assert (await app.client.get("/v1/keys", headers=reader)).status_code == 403
    created = await app.client.post("/v1/keys", headers=app.admin, json={"scope": "read"})
    assert created.status_code == 201
    assert created.json()["key"].startswith("swk_")


async def test_revoked_keys_stop_working_at_once(running_app: RunningApp) -> None:
    app = running_app
    created = (
        await app.client.post(
            "/v1/keys", headers=app.admin, json={"scope": "admin", "description": "temp"}
        )
    ).json()
    temp = app.auth(created["key"])
    assert (await app.client.get("/v1/buses", headers=temp)).status_code == 200
    revoked = await app.client.delete(f"/v1/keys/{created['id']}", headers=app.admin)
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    refused = await app.client.get("/v1/buses", headers=temp)
    assert refused.status_code == 401
    assert refused.json()["error"] == "Unauthorized"
    assert refused.headers["www-authenticate"] == "Bearer"
    listed = (await app.client.get("/v1/keys", headers=app.admin)).json()["keys"]
    assert all("key" not in k and "key_hash" not in k for k in listed)


async def test_authentication_errors(running_app: RunningApp) -> None:
    client = running_app.client
    forged = running_app.bootstrap.admin_key[:-4] + "AAAA"
    for headers in (
        {},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": f"Bearer {forged}"},
        {"Authorization": "Bearer swk_0123456789abcdef_" + "A" * 43},
    ):
        response = await client.get("/v1/buses", headers=headers)
        assert response.status_code == 401, headers
        body = response.json()
        assert body["error"] == "Unauthorized"
        assert body["message"]


async def test_bad_input_errors(running_app: RunningApp) -> None:
    app = running_app
    client, admin = app.client, app.admin

    bad_name = await client.put("/v1/buses/" + "x" * 65, headers=admin, json={})
    assert bad_name.status_code == 400
    assert "[A-Za-z0-9._-]{1,64}" in bad_name.json()["message"]
    bad_char = await client.get("/v1/buses/a%20b", headers=admin)
    assert bad_char.status_code == 400

    malformed = await client.put(
        "/v1/buses/orders",
        headers={**admin, "content-type": "application/json"},
        content=b'{"description": ',
    )
    assert malformed.status_code == 400
    assert malformed.json()["error"] == "InvalidRequest"

    wrong_type = await client.put("/v1/buses/orders", headers=admin, json={"description": 5})
    assert wrong_type.status_code == 422
    assert wrong_type.json()["field"] == "$.description"
    unknown = await client.put("/v1/buses/orders", headers=admin, json={"descriptoin": "x"})
    assert unknown.status_code == 422
    assert "descriptoin" in unknown.json()["message"]
    bad_scope = await client.post("/v1/keys", headers=admin, json={"scope": "root"})
    assert bad_scope.status_code == 422
    assert bad_scope.json()["field"] == "$.scope"

    wrong_media = await client.put(
        "/v1/buses/orders", headers={**admin, "content-type": "text/plain"}, content=b"hello"
    )
    assert wrong_media.status_code == 415
    assert wrong_media.json()["error"] == "UnsupportedMediaType"

    missing = await client.get("/v1/nothing-here", headers=admin)
    assert missing.status_code == 404
    assert missing.json()["error"] == "NotFound"
    method = await client.post("/v1/buses/default", headers=admin)
    assert method.status_code == 405
    assert method.json()["error"] == "MethodNotAllowed"
    protected = await client.delete("/v1/buses/default", headers=admin)
    assert protected.status_code == 409


async def test_oversized_bodies_are_refused_before_they_are_read(running_app: RunningApp) -> None:
    app = running_app
    limit = app.settings.max_body_bytes
    declared = await app.client.put(
        "/v1/buses/orders",
        headers={**app.admin, "content-type": "application/json"},
        content=b"{" + b" " * limit + b"}",
    )
    assert declared.status_code == 413
    assert declared.json() == {
        "error": "PayloadTooLarge",
        "message": f"the request body is larger than {limit} bytes",
        "limit": limit,
    }

    async def chunks() -> AsyncIterator[bytes]:
        # Streamed without Content-Length: counted as it arrives.
        for _ in range(limit // 65536 + 2):
            yield b" " * 65536

    streamed = await app.client.put(
        "/v1/buses/orders",
        headers={**app.admin, "content-type": "application/json"},
        content=chunks(),
    )
    assert streamed.status_code == 413


async def test_a_failing_store_answers_500_without_a_traceback(running_app: RunningApp) -> None:
    app = running_app
    async with app.services.stores.control.engine.begin() as conn:
        await conn.execute(sa.text("ALTER TABLE buses RENAME TO buses_gone"))
    response = await app.client.get("/v1/buses", headers=app.admin)
    assert response.status_code == 500
    assert response.json() == {
        "error": "InternalError",
        "message": "the server failed to handle the request",
    }
    assert "Traceback" not in response.text


async def test_tenant_rate_limit_answers_429_with_retry_after(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    import httpx
    import msgspec

    from stellwerk.app import build_app
    from stellwerk.config import load_settings

    settings = load_settings({"data_dir": str(tmp_path), "tenant_request_rate": "0.1"})
    app = build_app(settings)
    async with app.router.lifespan_context(app):
        await asyncio.wait_for(app.state.lifecycle.wait_started(), 30)
        keys = msgspec.json.decode((tmp_path / "bootstrap.json").read_bytes())
        headers = {"Authorization": f"Bearer {keys['admin_key']}"}
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://s"
        ) as client:
            statuses = [(await client.get("/v1/buses", headers=headers)) for _ in range(2)]
    # One request of burst, then a token every 10 s.
    assert [r.status_code for r in statuses] == [200, 429]
    assert statuses[1].json()["error"] == "TooManyRequests"
    assert statuses[1].headers["retry-after"] == "10"

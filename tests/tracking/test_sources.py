"""`/v1/sources/{name}`: a source binds a write key, shown once, to a bus and a kind, with its
allowed origins and the settings the collector applies; on SQLite and on PostgreSQL."""

from __future__ import annotations

from tests.conftest import RunningApp

from stellwerk.tracking import Sources, writekeys
from stellwerk.tracking.store import SourceStore

CACHE_SECONDS = 5.0  # Sources' default


async def test_a_source_is_created_with_a_write_key_shown_once(running_app: RunningApp) -> None:
    app = running_app
    body = {
        "kind": "segment",
        "allowed_origins": ["https://Shop.example:443", "http://localhost:3000"],
        "without_consent": "anonymous",
        "full_ip": True,
        "pseudonymise": ["traits.email", "userId"],
    }
    created = await app.client.put("/v1/sources/shop", headers=app.admin, json=body)
    assert created.status_code == 201, created.text
    source = created.json()
    key = source.pop("write_key")
    assert writekeys.key_id(key) == source["write_key_id"]
    assert source["bus"] == "default"
    # Origins as browsers send them: lower case, the default port left out.
    assert source["allowed_origins"] == ["http://localhost:3000", "https://shop.example"]
    assert source["without_consent"] == "anonymous"
    assert source["full_ip"] is True
    assert source["pseudonymise"] == ["traits.email", "userId"]

    shown = await app.client.get("/v1/sources/shop", headers=app.admin)
    assert shown.status_code == 200
    assert "write_key" not in shown.json()
    assert shown.json() == source

    # Replaced: the same key, not shown again.
    replaced = await app.client.put(
        "/v1/sources/shop", headers=app.admin, json={"kind": "segment", "full_ip": False}
    )
    assert replaced.status_code == 200, replaced.text
    assert "write_key" not in replaced.json()
    assert replaced.json()["write_key_id"] == source["write_key_id"]
    assert replaced.json()["allowed_origins"] == []
    assert replaced.json()["created_at"] == source["created_at"]

    listed = await app.client.get("/v1/sources", headers=app.admin)
    assert [s["name"] for s in listed.json()["sources"]] == ["shop"]

    assert (await app.client.delete("/v1/sources/shop", headers=app.admin)).status_code == 204
    assert (await app.client.get("/v1/sources/shop", headers=app.admin)).status_code == 404
    assert (await app.client.delete("/v1/sources/shop", headers=app.admin)).status_code == 404


async def test_bad_sources_are_refused_naming_the_field(running_app: RunningApp) -> None:
    app = running_app

    async def refused(name: str, body: object) -> tuple[int, dict[str, object]]:
        answer = await app.client.put(f"/v1/sources/{name}", headers=app.admin, json=body)
        return answer.status_code, answer.json()

    status, error = await refused("shop", {"kind": "matomo"})
    assert (status, error["error"]) == (422, "ValidationFailed")
    assert error["field"] == "$.kind"
    status, error = await refused("shop", {"kind": "segment", "bus": "nowhere"})
    assert (status, error["error"]) == (404, "NotFound")
    assert "nowhere" in str(error["message"])
    status, error = await refused(
        "shop", {"kind": "segment", "allowed_origins": ["https://ok.example", "shop.example"]}
    )
    assert (status, error["field"]) == (422, "$.allowed_origins[1]")
    status, error = await refused(
        "shop", {"kind": "segment", "allowed_origins": ["https://shop.example/path"]}
    )
    assert (status, error["field"]) == (422, "$.allowed_origins[0]")
    status, error = await refused("shop", {"kind": "segment", "pseudonymise": ["traits..email"]})
    assert (status, error["field"]) == (422, "$.pseudonymise[0]")
    status, error = await refused("shop", {"kind": "segment", "without_consent": "keep"})
    assert (status, error["field"]) == (422, "$.without_consent")
    status, error = await refused("shop", {"kind": "segment", "colour": "red"})
    assert status == 422
    status, error = await refused("bad name!", {"kind": "segment"})
    assert (status, error["field"]) == (400, "name")
    answer = await app.client.put("/v1/sources/shop", headers=app.admin, content=b"{", params={})
    assert answer.status_code == 400
    assert (await app.client.get("/v1/sources", headers=app.admin)).json() == {"sources": []}


async def test_sources_need_an_admin_key_to_change_and_stay_in_their_tenant(
    running_app: RunningApp,
) -> None:
    app = running_app
    ingest = app.auth(app.bootstrap.ingest_key)
    answer = await app.client.put("/v1/sources/shop", headers=ingest, json={"kind": "segment"})
    assert answer.status_code == 403
    answer = await app.client.put("/v1/sources/shop", json={"kind": "segment"})
    assert answer.status_code == 401
    assert (
        await app.client.put("/v1/sources/shop", headers=app.admin, json={"kind": "segment"})
    ).status_code == 201

    other = await app.services.platform.tenants.create("other")
    theirs = app.auth(other.admin_key)
    assert (await app.client.get("/v1/sources/shop", headers=theirs)).status_code == 404
    assert (await app.client.get("/v1/sources", headers=theirs)).json() == {"sources": []}
    assert (await app.client.delete("/v1/sources/shop", headers=theirs)).status_code == 404
    # Names are per tenant: the other tenant's "shop" is its own, with its own key.
    answer = await app.client.put("/v1/sources/shop", headers=theirs, json={"kind": "snowplow"})
    assert answer.status_code == 201
    assert answer.json()["kind"] == "snowplow"
    mine = await app.client.get("/v1/sources/shop", headers=app.admin)
    assert mine.json()["kind"] == "segment"


class Monotonic:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_write_key_resolves_to_its_source_and_a_deletion_elsewhere_within_the_cache(
    running_app: RunningApp,
) -> None:
    app = running_app
    made = await app.client.put(
        "/v1/sources/shop",
        headers=app.admin,
        json={"kind": "segment", "allowed_origins": ["https://shop.example"]},
    )
    key = made.json()["write_key"]
    # Another process's view of the same database: its own cache, on its own clock.
    clock = Monotonic()
    elsewhere = Sources(
        SourceStore(app.services.stores.control.engine),
        app.services.platform.buses,
        monotonic=clock,
    )
    found = await elsewhere.resolve(key)
    assert found is not None
    assert (found.name, found.bus, found.kind, found.tenant.name) == (
        "shop",
        "default",
        "segment",
        "default",
    )
    assert found.allows_origin("https://shop.example")
    assert not found.allows_origin("https://evil.example")
    assert await elsewhere.origin_allowed("https://shop.example")
    assert not await elsewhere.origin_allowed("https://evil.example")
    # The same id with another secret is not the key.
    assert await elsewhere.resolve(key[:-3] + ("xyz" if key[-3:] != "xyz" else "abc")) is None
    assert await elsewhere.resolve("wk_nothing") is None

    assert (await app.client.delete("/v1/sources/shop", headers=app.admin)).status_code == 204
    assert await elsewhere.resolve(key) is not None  # cached: no query per request
    clock.now += CACHE_SECONDS + 0.1
    assert await elsewhere.resolve(key) is None
    assert not await elsewhere.origin_allowed("https://shop.example")

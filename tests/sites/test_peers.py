"""Two sites paired over loopback: the peer API, signed peer requests, and every accepted event
replicated to the peer with its id and source."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.polling import wait_until
from tests.sites.support import SECRET, Site, gave_way, pair, two_sites

from stellwerk.sites import seal_texts, signed_headers

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, Site]]:
    with two_sites(Path(tmp_path_factory.mktemp("sites"))) as (a, b):
        pair(a, b)
        yield a, b


def test_a_peer_is_shown_without_its_secret_which_is_sealed_at_rest(
    sites: tuple[Site, Site],
) -> None:
    a, b = sites
    answer = a.api("GET", "/v1/peers/b")
    assert answer.status_code == 200, answer.text
    peer = answer.json()
    assert peer["site"] == "b"
    assert peer["url"] == b.url
    assert peer["local_site"] == "a"
    assert SECRET not in answer.text
    assert [p["site"] for p in a.api("GET", "/v1/peers").json()["peers"]] == ["b"]
    with sqlite3.connect(a.server.data_dir / "control.db") as db:
        (sealed,) = db.execute("SELECT secret FROM sites_peers WHERE site = 'b'").fetchone()
    assert SECRET not in sealed
    assert sealed.startswith("swk1.")


@pytest.mark.parametrize(
    ("site", "body", "status", "field"),
    [
        ("a", {"url": "http://127.0.0.1:1", "secret": SECRET}, 400, "site"),
        ("B!", {"url": "http://127.0.0.1:1", "secret": SECRET}, 400, "site"),
        ("c", {"url": "ftp://127.0.0.1:1", "secret": SECRET}, 400, "url"),
        ("c", {"url": "http://127.0.0.1:1", "secret": "short"}, 422, None),
    ],
)
def test_a_bad_pairing_is_refused_naming_the_problem(
    sites: tuple[Site, Site], site: str, body: dict[str, str], status: int, field: str | None
) -> None:
    a, _ = sites
    answer = a.api("PUT", f"/v1/peers/{site}", json=body)
    assert answer.status_code == status, answer.text
    if field is not None:
        assert answer.json()["field"] == field


def test_a_peer_request_with_a_wrong_signature_is_refused_and_logged(
    sites: tuple[Site, Site],
) -> None:
    _, b = sites
    body = b'{"bus":"default","events":[]}'
    path = "/v1/peers/a/events"
    headers = signed_headers(
        "not-the-pair-secret-at-all",
        site="a",
        tenant="default",
        timestamp=int(time.time()),
        method="POST",
        path=path,
        body=body,
    )
    answer = httpx.post(b.url + path, content=body, headers=headers, timeout=10)
    assert answer.status_code == 401, answer.text
    assert "signature does not match" in answer.json()["message"]
    unsigned = httpx.post(b.url + path, content=body, timeout=10)
    assert unsigned.status_code == 401
    assert "peer request refused" in b.server.output()
    assert SECRET not in b.server.output()
    good = signed_headers(
        SECRET,
        site="a",
        tenant="default",
        timestamp=int(time.time()),
        method="POST",
        path=path,
        body=body,
    )
    assert httpx.post(b.url + path, content=body, headers=good, timeout=10).status_code == 200


def test_peer_events_are_answered_ahead_of_the_app_as_the_route_answers(
    sites: tuple[Site, Site],
) -> None:
    """`POST /v1/peers/{site}/events` is the sites' fast path: each outcome as the route's."""
    _, b = sites

    def post(body: bytes, *, signed_as: str = "a", path: str = "/v1/peers/a/events") -> Any:
        headers = signed_headers(
            SECRET,
            site=signed_as,
            tenant="default",
            timestamp=int(time.time()),
            method="POST",
            path=path,
            body=body,
        )
        return httpx.post(b.url + path, content=body, headers=headers, timeout=10)

    event = {"specversion": "1.0", "id": "fast-1", "source": "urn:fast", "type": "t"}
    good = post(json.dumps({"bus": "fast-bus", "events": [event]}).encode())
    assert good.status_code == 200, good.text
    assert good.json() == {"stored": 1}
    assert good.headers["content-type"] == "application/json"

    not_a_batch = post(b'{"bus":"fast-bus"}')
    assert not_a_batch.status_code == 400
    assert not_a_batch.json()["error"] == "InvalidRequest"
    assert "not a batch of replicated events" in not_a_batch.json()["message"]
    not_an_event = post(b'{"bus":"fast-bus","events":[{"id":"x"}]}')
    assert not_an_event.status_code == 400
    assert not_an_event.json()["field"] == "events[0]"

    other_site = post(b'{"bus":"fast-bus","events":[]}', path="/v1/peers/c/events")
    assert other_site.status_code == 401
    assert "the path names another site" in other_site.json()["message"]
    assert other_site.headers["www-authenticate"] == "Bearer"
    unsigned = httpx.post(b.url + "/v1/peers/a/events", content=b"{}", timeout=10)
    assert unsigned.status_code == 401
    assert "no stellwerk-site or stellwerk-tenant header" in unsigned.json()["message"]
    too_large = post(b" " * (4 * 1024 * 1024 + 1))
    assert too_large.status_code == 413
    assert too_large.json()["error"] == "PayloadTooLarge"

    # Not this route: the app answers as it does.
    assert httpx.post(b.url + "/v1/peers/a/events/x", timeout=10).status_code == 404
    assert httpx.get(b.url + "/v1/peers/a/events", timeout=10).status_code == 405
    metrics = httpx.get(b.url + "/metrics", timeout=10).text
    assert 'route="/v1/peers/{site}/events"' in metrics


def test_accepted_events_reach_the_peer_with_their_id_source_and_origin(
    sites: tuple[Site, Site],
) -> None:
    a, b = sites
    sent = [
        {
            "specversion": "1.0",
            "id": f"r-{i}",
            "source": "urn:shop",
            "type": "order.created",
            "data": {"n": i},
        }
        for i in range(20)
    ]
    assert a.send("default", sent).status_code == 202
    wait_until(
        lambda: a.api("GET", "/v1/peers/b").json(),
        what="site a to show bus default mirrored on b",
        accept=lambda peer: (
            peer["pending"] == []
            and "default" in peer["mirrored"]
            and peer["buses"][0]["replicated"] > 0
        ),
    )
    on_a = a.events("default", 20)
    on_b = b.events("default", 20)
    assert [(e["id"], e["source"]) for e in on_b] == [(e["id"], e["source"]) for e in on_a]
    assert all(e["originsite"] == "a" for e in on_b)
    assert [e["originrecordedtime"] for e in on_b] == [e["recordedtime"] for e in on_a]
    # Sent again (a client's retry through the other site), nothing is stored twice.
    again = b.send("default", sent[:5])
    assert again.status_code == 202
    assert again.json()["duplicates"] == 5


def test_a_bad_endpoint_is_refused_naming_the_field(sites: tuple[Site, Site]) -> None:
    a, _ = sites
    for body, field in [
        ({"primary": "a", "secondary": "a", "buses": ["default"]}, "secondary"),
        ({"primary": "x", "secondary": "y", "buses": ["default"]}, "primary"),
        ({"primary": "a", "secondary": "c", "buses": ["default"]}, "secondary"),  # no peer c
        ({"primary": "a", "secondary": "b", "buses": ["default", "nope"]}, "buses[1]"),
    ]:
        answer = a.api("PUT", "/v1/endpoints/orders", json=body)
        assert answer.status_code == 400, answer.text
        assert answer.json()["field"] == field
    wrong_mode = {"primary": "a", "secondary": "b", "buses": ["default"], "replication": "x"}
    assert a.api("PUT", "/v1/endpoints/orders", json=wrong_mode).status_code == 422
    assert a.api("GET", "/v1/endpoints/nothing").status_code == 404


def test_an_endpoint_put_on_one_site_is_on_the_other_healthy_on_its_primary(
    sites: tuple[Site, Site],
) -> None:
    a, b = sites
    spec = {"primary": "a", "secondary": "b", "buses": ["default"]}
    answer = a.api("PUT", "/v1/endpoints/quiet", json=spec)
    assert answer.status_code == 201, answer.text
    made = answer.json()
    assert made["mirrored"] is True
    assert (made["replication"], made["health"]["evaluations"]) == ("async", 2)
    on_b = b.api("GET", "/v1/endpoints/quiet").json()
    assert (on_b["state"], on_b["active"], on_b["site"]) == ("healthy", "a", "b")
    assert [t["state"] for t in on_b["history"]] == ["healthy"]
    assert set(on_b["lag"]) == {"events", "seconds"}
    assert [e["name"] for e in a.api("GET", "/v1/endpoints").json()["endpoints"]] == ["quiet"]


def test_keys_and_buses_are_mirrored_so_one_key_works_on_both_sites(
    sites: tuple[Site, Site],
) -> None:
    a, b = sites
    assert a.api("PUT", "/v1/buses/mirrored-bus").status_code == 201
    made = a.api("POST", "/v1/keys", json={"scope": "ingest", "description": "both sites"})
    assert made.status_code == 201, made.text
    key = made.json()
    one = {"specversion": "1.0", "id": "m-1", "source": "urn:m", "type": "t"}

    def sent_to_b() -> int:
        return httpx.post(
            f"{b.url}/v1/buses/mirrored-bus/events",
            headers={"Authorization": f"Bearer {key['key']}"},
            json=one,
            timeout=10,
        ).status_code

    wait_until(sent_to_b, what="a's new key and bus to work on b", accept=lambda s: s == 202)
    shown = wait_until(
        lambda: a.api("GET", "/v1/peers/b").json()["keys_and_buses"],
        what="a to show its keys and buses mirrored",
        accept=lambda m: m["pending"] is False,
    )
    assert shown["mirrored_at"] is not None
    assert a.api("DELETE", f"/v1/keys/{key['id']}").status_code in (200, 204)
    wait_until(sent_to_b, what="the key revoked on a to be refused on b", accept=lambda s: s == 401)


def post_one(site: Site, key: str, bus: str = "default") -> int:
    one = {"specversion": "1.0", "id": "first-keys", "source": "urn:m", "type": "t"}
    return httpx.post(
        f"{site.url}/v1/buses/{bus}/events",
        headers={"Authorization": f"Bearer {key}"},
        json=one,
        timeout=10,
    ).status_code


def test_the_new_sites_first_tenant_gives_way_to_the_peers_and_its_keys_stop_working(
    sites: tuple[Site, Site],
) -> None:
    # The interface: a tenant the site's first start made, holding no events, gives
    # way to the peer's tenant of the same name. Both were empty here: the younger gave way.
    a, b = sites
    kept = a if gave_way(b, a) else b
    gone = b if kept is a else a
    assert gone.first is not None
    assert kept.first is not None
    assert gone.first.admin_key != kept.first.admin_key
    shown = gone.api("GET", f"/v1/peers/{kept.name}").json()["tenant"]
    assert shown["state"] == "gave-way"
    assert kept.name in shown["detail"]
    assert kept.api("GET", f"/v1/peers/{gone.name}").json()["tenant"]["state"] == "joined"
    for site in (gone, kept):
        # The peer's keys work on both sites; the given-way tenant's first keys on neither.
        assert post_one(site, kept.first.ingest_key) == 202
        wait_until(
            lambda site=site: post_one(site, gone.first.ingest_key),  # type: ignore[misc]
            what=f"{gone.name}'s first ingest key to be refused on {site.name}",
            accept=lambda status: status == 401,
        )
        answer = httpx.get(
            f"{site.url}/v1/peers",
            headers={"Authorization": f"Bearer {gone.first.admin_key}"},
            timeout=10,
        )
        assert answer.status_code == 401, answer.text


def test_tenants_that_both_hold_events_are_not_merged_and_the_pairing_says_so(
    tmp_path: Path,
) -> None:
    with two_sites(tmp_path) as (a, b):
        for site in (a, b):
            assert post_one(site, site.bootstrap.ingest_key) == 202
        for here, there in ((a, b), (b, a)):
            answer = here.api(
                "PUT", f"/v1/peers/{there.name}", json={"url": there.url, "secret": SECRET}
            )
            assert answer.status_code == 201, answer.text
        for here, there in ((a, b), (b, a)):

            def peer(here: Site = here, there: Site = there) -> dict[str, Any]:
                found: dict[str, Any] = here.api("GET", f"/v1/peers/{there.name}").json()
                return found

            shown = wait_until(
                peer,
                what=f"{here.name} to show the conflict with {there.name}",
                accept=lambda p: p["tenant"]["state"] == "conflict",
            )
            assert "'default'" in shown["tenant"]["detail"]
            assert shown["keys_and_buses"]["pending"] is True
            # Nothing merged: neither site's keys work on the other, each site's own still do.
            assert post_one(there, here.bootstrap.ingest_key) == 401
            assert post_one(here, here.bootstrap.ingest_key) == 202
        # Events of the tenant are refused too, with 409 naming it.
        answer = signed_put(a, b, "/v1/peers/a/routed", b'{"buses": {}}')
        assert answer.status_code == 409, answer.text
        assert "'default'" in answer.json()["message"]
        assert "Traceback" not in a.server.output() + b.server.output()


def test_an_empty_new_site_gives_way_to_a_peer_whose_tenant_holds_events(
    tmp_path: Path,
) -> None:
    # Whichever tenant is older: the one that holds events stays, the empty one gives way.
    with two_sites(tmp_path) as (a, b):
        described = {"description": "orders of a"}
        assert a.api("PUT", "/v1/buses/orders", json=described).status_code == 201
        assert post_one(a, a.bootstrap.ingest_key, "orders") == 202
        assert pair(a, b) is a
        assert b.first is not None
        assert a.first is not None
        wait_until(
            lambda: post_one(b, b.first.ingest_key),  # type: ignore[union-attr]
            what="b's first key to be refused on b",
            accept=lambda status: status == 401,
        )
        assert post_one(b, a.first.ingest_key, "orders") == 202  # a's key and bus work on b
        bus = b.api("GET", "/v1/buses/orders").json()
        assert bus["description"] == "orders of a"
        assert b.api("GET", "/v1/peers/a").json()["tenant"]["state"] == "gave-way"


def signed_put(origin: Site, to: Site, path: str, body: bytes) -> httpx.Response:
    """A PUT of the tenant `default` from the site `origin` to the site `to`, signed."""
    headers = signed_headers(
        SECRET,
        site=origin.name,
        tenant="default",
        timestamp=int(time.time()),
        method="PUT",
        path=path,
        body=body,
    )
    return httpx.put(to.url + path, content=body, headers=headers, timeout=10)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"buses": {"default": -1}}', "buses.default"),
        (b'{"buses": {"no such/bus": 1}}', "buses.no such/bus"),
        (b'{"buses": {"default": "soon"}}', None),
        (b'{"routed": 1}', None),
    ],
)
def test_bad_routed_positions_from_a_peer_are_refused_naming_the_problem(
    sites: tuple[Site, Site], body: bytes, field: str | None
) -> None:
    a, b = sites
    answer = signed_put(a, b, "/v1/peers/a/routed", body)
    assert answer.status_code == 400, answer.text
    if field is not None:
        assert answer.json()["field"] == field
    unsigned = httpx.put(b.url + "/v1/peers/a/routed", content=b'{"buses": {}}', timeout=10)
    assert unsigned.status_code == 401


def test_the_rules_of_an_endpoints_buses_follow_its_active_site(
    sites: tuple[Site, Site],
) -> None:
    a, b = sites
    spec = {"primary": "a", "secondary": "b", "buses": ["default"]}
    assert a.api("PUT", "/v1/endpoints/quiet", json=spec).status_code in (200, 201)
    rule = {
        "pattern": {"source": ["urn:never"]},
        "targets": [{"id": "hook", "type": "http", "url": "http://127.0.0.1:9/hook"}],
    }
    assert a.api("PUT", "/v1/buses/default/rules/mirrored", json=rule).status_code == 201
    on_a = a.api("GET", "/v1/buses/default/rules/mirrored").json()

    def rules_on_b() -> dict[str, Any]:
        found = b.api("GET", "/v1/buses/default/rules").json()["rules"]
        return {r["name"]: r for r in found}

    on_b = wait_until(rules_on_b, what="the rule on b", accept=lambda r: "mirrored" in r)
    # The same pattern, and the same signing secret: receivers verify b's deliveries alike.
    assert on_b["mirrored"]["pattern"] == on_a["pattern"]
    assert on_b["mirrored"]["targets"][0]["secret"] == on_a["targets"][0]["secret"]

    # b stands by for `default`: a rule made there gives way to a's rules at their next change.
    assert b.api("PUT", "/v1/buses/default/rules/only-on-b", json=rule).status_code == 201
    assert a.api("PUT", "/v1/buses/default/rules/second", json=rule).status_code == 201
    wait_until(
        rules_on_b,
        what="b to have a's rules and no other",
        accept=lambda r: {"mirrored", "second"} <= r.keys() and "only-on-b" not in r,
    )
    assert a.api("DELETE", "/v1/buses/default/rules/mirrored").status_code == 204
    wait_until(rules_on_b, what="the rule deleted on b", accept=lambda r: "mirrored" not in r)

    # a is active for `default`: it takes no rules for it from b.
    answer = signed_put(b, a, "/v1/peers/b/rules", b'{"buses": {"default": []}}')
    assert answer.status_code == 409, answer.text
    assert "second" in {r["name"] for r in a.api("GET", "/v1/buses/default/rules").json()["rules"]}


def test_a_snapshot_whose_key_texts_do_not_open_is_refused_and_takes_nothing(
    sites: tuple[Site, Site],
) -> None:
    _, b = sites
    forged = {
        "id": "forged01",
        "scope": "admin",
        "key_hash": "0" * 64,
        "description": "",
        "created_at": "2026-01-01T00:00:00Z",
        "revoked_at": None,
    }
    texts = seal_texts(
        "not-the-pair-secret-at-all",
        {"forged01": "swk_forged01_x"},
        tenant="default",
        sender="a",
        receiver="b",
    )
    body = json.dumps({"keys": [forged], "buses": [], "texts": texts}).encode()
    path = "/v1/peers/a/mirror"

    def signed(secret: str) -> dict[str, str]:
        return signed_headers(
            secret,
            site="a",
            tenant="default",
            timestamp=int(time.time()),
            method="PUT",
            path=path,
            body=body,
        )

    refused = httpx.put(b.url + path, content=body, headers=signed("x" * 20), timeout=10)
    assert refused.status_code == 401, refused.text
    # Signed with the pair's secret, but its texts sealed under another: 400, nothing taken.
    unopened = httpx.put(b.url + path, content=body, headers=signed(SECRET), timeout=10)
    assert unopened.status_code == 400, unopened.text
    assert unopened.json()["field"] == "$.texts"
    assert "forged01" not in b.api("GET", "/v1/keys").text
    assert "mirrored key texts refused" in b.server.output()

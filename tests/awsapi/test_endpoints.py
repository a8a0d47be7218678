"""EventBridge's global endpoint operations through boto3, over the sites capability's
endpoints: a region is a site. One server (site `local`) paired with a peer that is not there
(the spec never reaches it: `CREATING`), and with a second real server (site `us-west-2`) that
takes the spec (`ACTIVE`)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.crt.auth import CrtSigV4AsymAuth
from botocore.exceptions import ClientError
from tests.awsapi.conftest import Server, error_of, running_server
from tests.conftest import free_port
from tests.polling import wait_until

from stellwerk.awsapi.edge import CONTENT_TYPE
from stellwerk.awsapi.endpoints_ops import endpoint_state
from stellwerk.capability import GlobalEndpoint, GlobalEndpointSpec

pytestmark = pytest.mark.slow  # a second server

SECRET = "pair-secret-0123456789abcdef"
HEALTH_CHECK = "arn:aws:route53:::healthcheck/0123-abcd"
ROLE = "arn:aws:iam::123456789012:role/replication"
ABSENT = "eu-north-1"  # a peer with no server behind it
PEER = "us-west-2"


def bus_arn(site: str, bus: str, account: str = "default") -> dict[str, str]:
    return {"EventBusArn": f"arn:aws:events:{site}:{account}:event-bus/{bus}"}


def routing(secondary: str, health_check: str = HEALTH_CHECK) -> dict[str, Any]:
    return {
        "FailoverConfig": {
            "Primary": {"HealthCheck": health_check},
            "Secondary": {"Route": secondary},
        }
    }


def pair(server: Server, site: str, url: str) -> None:
    answer = server.native("PUT", f"/v1/peers/{site}", json={"url": url, "secret": SECRET})
    assert answer.status_code in (200, 201), answer.text


@pytest.fixture(scope="module")
def peer(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A second site, `us-west-2`, paired with the module's server both ways."""
    data = Path(tmp_path_factory.mktemp("aws-peer")) / "data"
    with running_server(data, site=PEER) as running:
        pair(server, PEER, running.url)
        pair(running, "local", server.url)
        settle(server, running)
        yield running


def settle(server: Server, peer: Server) -> None:
    """Wait until the pairing settled (docs/global-endpoints.md, "Tenant adoption"): the
    younger site's empty first tenant, the peer's, gives way, and its keys stop working; the
    peer is reached with the module server's keys (mirrored) from then on."""

    def state(here: Server, key: str, site: str) -> str:
        answer = httpx.get(
            f"{here.url}/v1/peers/{site}", headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        return str(answer.json()["tenant"]["state"]) if answer.status_code == 200 else ""

    admin = server.bootstrap.admin_key
    wait_until(
        lambda: state(peer, admin, "local"),
        accept=lambda found: found == "gave-way",
        what="the peer's first tenant to give way to the server's",
    )
    wait_until(
        lambda: state(server, admin, PEER),
        accept=lambda found: found == "joined",
        what="the server to see the peer joined",
    )
    peer.bootstrap = server.bootstrap


@pytest.fixture(scope="module")
def orders(server: Server) -> str:
    server.admin.create_event_bus(Name="orders")
    pair(server, ABSENT, f"http://127.0.0.1:{free_port()}")
    return "orders"


def test_an_endpoint_the_peer_has_not_taken_is_creating_and_maps_onto_the_native_one(
    server: Server, orders: str
) -> None:
    events = server.admin
    made = events.create_endpoint(
        Name="orders-eu",
        Description="orders, two sites",
        RoutingConfig=routing(ABSENT),
        ReplicationConfig={"State": "ENABLED"},
        EventBuses=[bus_arn("local", orders), bus_arn(ABSENT, orders)],
        RoleArn=ROLE,
    )
    assert made["Arn"] == "arn:aws:events:eu-central-1:default:endpoint/orders-eu"
    assert made["State"] == "CREATING"
    assert made["RoutingConfig"] == routing(ABSENT)
    assert made["EventBuses"] == [bus_arn("local", orders), bus_arn(ABSENT, orders)]
    assert made["RoleArn"] == ROLE

    native = server.native("GET", "/v1/endpoints/orders-eu").json()
    assert (native["primary"], native["secondary"]) == ("local", ABSENT)
    assert (native["buses"], native["replication"]) == (["orders"], "async")
    assert (native["state"], native["active"], native["mirrored"]) == ("healthy", "local", False)

    described = events.describe_endpoint(Name="orders-eu")
    assert described["Description"] == "orders, two sites"
    assert re.fullmatch(r"[a-z2-7]{10}\.[a-z2-7]{3}", described["EndpointId"])
    assert described["EndpointUrl"] == server.url
    assert described["State"] == "CREATING"
    reason = f"Site {ABSENT} does not have the endpoint as it is here yet."
    assert described["StateReason"] == reason
    assert isinstance(described["CreationTime"], datetime)
    assert described["CreationTime"].tzinfo is not None
    assert described["LastModifiedTime"] >= described["CreationTime"]

    listed = events.list_endpoints(NamePrefix="orders-")["Endpoints"]
    assert [e["Name"] for e in listed] == ["orders-eu"]
    assert listed[0]["EndpointId"] == described["EndpointId"]

    # Replication off, the rest as it was (the native health policy too).
    server.native(
        "PUT",
        "/v1/endpoints/orders-eu",
        json={**_spec(native), "health": {**native["health"], "evaluations": 7}},
    )
    changed = events.update_endpoint(Name="orders-eu", ReplicationConfig={"State": "DISABLED"})
    assert changed["ReplicationConfig"] == {"State": "DISABLED"}
    assert changed["EndpointId"] == described["EndpointId"]
    native = server.native("GET", "/v1/endpoints/orders-eu").json()
    assert (native["replication"], native["health"]["evaluations"]) == ("off", 7)
    again = events.describe_endpoint(Name="orders-eu")
    assert (again["Description"], again["RoleArn"]) == ("orders, two sites", ROLE)
    assert again["RoutingConfig"] == routing(ABSENT)

    events.delete_endpoint(Name="orders-eu")
    assert server.native("GET", "/v1/endpoints/orders-eu").status_code == 404
    with pytest.raises(ClientError) as gone:
        events.describe_endpoint(Name="orders-eu")
    assert error_of(gone)[0] == "ResourceNotFoundException"


def _spec(native: dict[str, Any]) -> dict[str, Any]:
    return {k: native[k] for k in ("primary", "secondary", "buses", "replication")}


@pytest.mark.parametrize(
    ("change", "code", "says"),
    [
        (
            {"EventBuses": [bus_arn("local", "orders"), bus_arn("local", "orders")]},
            "ValidationException",
            "two regions",
        ),
        (
            {"EventBuses": [bus_arn("local", "orders"), bus_arn(ABSENT, "other")]},
            "ValidationException",
            "same name",
        ),
        (
            {"EventBuses": [bus_arn("local", "orders"), bus_arn(ABSENT, "orders", "acme")]},
            "ValidationException",
            "account 'acme'",
        ),
        (
            {"EventBuses": [bus_arn("local", "nope"), bus_arn(ABSENT, "nope")]},
            "ValidationException",
            "bus 'nope' does not exist",
        ),
        ({"RoutingConfig": routing(ABSENT, "health")}, "ValidationException", "HealthCheck"),
        ({"RoutingConfig": routing("us-east-22")}, "ValidationException", "neither event bus"),
        (
            {
                "RoutingConfig": routing("ap-south-1"),
                "EventBuses": [bus_arn("local", "orders"), bus_arn("ap-south-1", "orders")],
            },
            "ValidationException",
            "'ap-south-1' is not a peer",
        ),
        (
            {
                "RoutingConfig": routing("ap-south-1"),
                "EventBuses": [bus_arn("us-east-1", "orders"), bus_arn("ap-south-1", "orders")],
            },
            "ValidationException",
            "neither the primary nor the secondary",
        ),
        ({"ReplicationConfig": {"State": "SOMETIMES"}}, "ValidationException", "ENABLED"),
        ({"RoleArn": "arn:aws:iam::1:role/x"}, "ValidationException", "RoleArn"),
        ({"Name": "a name"}, "ValidationException", "Name"),
        ({"Name": "taken"}, "ResourceAlreadyExistsException", "taken already exists"),
    ],
)
def test_a_bad_endpoint_gets_eventbridge_s_error_naming_the_problem(
    server: Server, orders: str, change: dict[str, Any], code: str, says: str
) -> None:
    events = server.admin
    given: dict[str, Any] = {
        "Name": "bad",
        "RoutingConfig": routing(ABSENT),
        "EventBuses": [bus_arn("local", orders), bus_arn(ABSENT, orders)],
    }
    if change.get("Name") == "taken":
        with contextlib.suppress(events.exceptions.ResourceAlreadyExistsException):
            events.create_endpoint(**{**given, "Name": "taken"})
    with pytest.raises(ClientError) as refused:
        events.create_endpoint(**{**given, **change})
    found, message = error_of(refused)
    assert (found, says in message) == (code, True), message


def test_an_endpoint_that_is_not_there_is_not_found(server: Server) -> None:
    events = server.admin
    calls: list[Callable[[], object]] = [
        lambda: events.describe_endpoint(Name="missing"),
        lambda: events.delete_endpoint(Name="missing"),
        lambda: events.update_endpoint(Name="missing", Description="x"),
    ]
    for call in calls:
        with pytest.raises(ClientError) as refused:
            call()
        assert error_of(refused) == (
            "ResourceNotFoundException",
            "Endpoint missing does not exist.",
        )


def test_an_endpoint_the_peer_took_is_active_and_put_events_reach_it_by_endpoint_id(
    server: Server, peer: Server, orders: str
) -> None:
    # The server's key is mirrored to the peer with its text, sealed under the pair's secret
    # (docs/global-endpoints.md, "What is mirrored"): it signs SigV4 there too.
    wait_until(
        lambda: [bus["Name"] for bus in peer.admin.list_event_buses()["EventBuses"]],
        accept=lambda names: orders in names,
        what="the server's bus on the peer, listed with the server's key signing SigV4 there",
        ignoring=ClientError,  # the peer shows the pairing settled just before it takes the keys
    )
    made = server.admin.create_endpoint(
        Name="orders-global",
        RoutingConfig=routing(PEER),
        EventBuses=[bus_arn("local", orders), bus_arn(PEER, orders)],
    )
    assert made["State"] == "ACTIVE"
    seen = wait_until(
        lambda: peer.native("GET", "/v1/endpoints/orders-global"),
        accept=lambda r: r.status_code == 200,
        what="the peer has the endpoint",
    ).json()
    assert (seen["primary"], seen["secondary"], seen["site"]) == ("local", PEER, PEER)
    described = server.admin.describe_endpoint(Name="orders-global")
    assert described["State"] == "ACTIVE"
    assert described["StateReason"] == "healthy: site local takes the events (created)."
    endpoint_id = described["EndpointId"]

    # boto3 signs a call with EndpointId with SigV4a (awscrt, a dev dependency, signs it) ...
    put = server.admin.put_events(EndpointId=endpoint_id, Entries=[_entry(orders)])
    assert put["FailedEntryCount"] == 0, put
    (stored,) = server.on_bus(orders, 1_000, until=put["Entries"][0]["EventId"])[-1:]
    assert stored["awsregion"] == "local"  # signed for every region ("*"): this site's
    wrong = server.events(server.bootstrap.admin_key, secret="swk_wrong")
    with pytest.raises(ClientError) as refused:
        wrong.put_events(EndpointId=endpoint_id, Entries=[_entry(orders)])
    assert error_of(refused)[0] == "InvalidSignatureException"
    # ... or with SigV4 when told to (botocore without awscrt cannot sign SigV4a).
    v4 = boto3.client(
        "events",
        endpoint_url=server.url,
        region_name="local",
        aws_access_key_id=server.bootstrap.admin_key.split("_")[1],
        aws_secret_access_key=server.bootstrap.admin_key,
        config=Config(signature_version="v4", retries={"max_attempts": 1}),
    )
    put = v4.put_events(EndpointId=endpoint_id, Entries=[_entry(orders), _entry("default")])
    assert put["FailedEntryCount"] == 1
    event_id = put["Entries"][0]["EventId"]
    assert put["Entries"][1] == {
        "ErrorCode": "InvalidArgument",
        "ErrorMessage": "Event bus default is not a bus of endpoint orders-global.",
    }
    assert [e["id"] for e in server.on_bus(orders, 1_000, until=event_id)][-1] == event_id
    # The peer has the endpoint under the same EndpointId (made from the tenant's name: the
    # tenants' ids differ, the site that gave way kept its own) and the server's key with its
    # text: a SigV4a call there is verified with the same key.
    assert peer.admin.describe_endpoint(Name="orders-global")["EndpointId"] == endpoint_id
    with sqlite3.connect(server.data_dir / "control.db") as db:
        ((tenant_id,),) = db.execute("SELECT id FROM tenants WHERE name = 'default'").fetchall()
    with sqlite3.connect(peer.data_dir / "control.db") as db:
        ((peer_tenant_id,),) = db.execute("SELECT id FROM tenants WHERE name = 'default'")
    assert peer_tenant_id != tenant_id
    legacy = base64.b32encode(hashlib.sha256(f"{tenant_id}/orders-global".encode()).digest())
    legacy_id = f"{legacy.decode().lower()[:10]}.{legacy.decode().lower()[10:13]}"
    assert legacy_id != endpoint_id  # as given out before: still taken where it was made
    assert (
        server.admin.put_events(EndpointId=legacy_id, Entries=[_entry(orders)])["FailedEntryCount"]
        == 0
    )
    on_peer = peer.admin.put_events(EndpointId=endpoint_id, Entries=[_entry(orders)])
    assert on_peer["FailedEntryCount"] == 0, on_peer
    peer_id = on_peer["Entries"][0]["EventId"]
    assert [e["id"] for e in peer.on_bus(orders, 1_000, until=peer_id)][-1] == peer_id
    with pytest.raises(ClientError) as unknown:
        v4.put_events(EndpointId="nothing00.abc", Entries=[_entry(orders)])
    assert error_of(unknown)[0] == "ResourceNotFoundException"
    server.admin.delete_endpoint(Name="orders-global")


def _entry(bus: str) -> dict[str, str]:
    return {
        "Source": "shop",
        "DetailType": "Order Placed",
        "Detail": json.dumps({"n": 1}),
        "EventBusName": bus,
    }


def _endpoint(state: str, *, mirrored: bool = True, reason: str = "") -> GlobalEndpoint:
    now = datetime.now(UTC)
    return GlobalEndpoint(
        name="e",
        spec=GlobalEndpointSpec("a", "b", ("default",)),
        state=state,  # type: ignore[arg-type]
        active="b" if state == "failed-over" else "a",
        site="a",
        mirrored=mirrored,
        reason=reason,
        created_at=now,
        updated_at=now,
    )


def test_every_failover_state_is_active_to_eventbridge_and_the_reason_tells_which() -> None:
    assert endpoint_state(_endpoint("failed-over", reason="2 failed evaluations of a")) == (
        "ACTIVE",
        "failed-over: site b takes the events (2 failed evaluations of a).",
    )
    for state in ("healthy", "failing-over", "failing-back"):
        assert endpoint_state(_endpoint(state)) == ("ACTIVE", f"{state}: site a takes the events.")
    assert endpoint_state(_endpoint("healthy", mirrored=False))[0] == "CREATING"


def test_a_sigv4a_signature_over_another_body_or_without_its_region_set_is_refused(
    server: Server,
) -> None:
    key = server.bootstrap.admin_key
    body = json.dumps({"Entries": [_entry("default")]}).encode()
    request = AWSRequest(
        method="POST",
        url=server.url + "/",
        data=body,
        headers={"X-Amz-Target": "AWSEvents.PutEvents", "Content-Type": CONTENT_TYPE},
    )
    CrtSigV4AsymAuth(Credentials(key.split("_")[1], key), "events", "*").add_auth(request)
    headers = dict(request.headers.items())
    assert headers["Authorization"].startswith("AWS4-ECDSA-P256-SHA256 ")

    def post(content: bytes, sent: dict[str, str]) -> httpx.Response:
        return httpx.post(server.url + "/", content=content, headers=sent, timeout=30)

    taken = post(body, headers)
    assert (taken.status_code, taken.json()["FailedEntryCount"]) == (200, 0), taken.text
    altered = post(body.replace(b"shop", b"shoq"), headers)
    assert altered.json()["__type"] == "InvalidSignatureException"
    without = {k: v for k, v in headers.items() if k.lower() != "x-amz-region-set"}
    refused = post(body, without).json()
    assert refused == {
        "__type": "InvalidSignatureException",
        "message": "'X-Amz-Region-Set' must be given and signed",
    }

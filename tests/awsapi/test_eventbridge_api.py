"""The EventBridge API through the real boto3 client against the whole app behind uvicorn on
loopback: PutEvents onto the same log as native ingest, buses, TestEventPattern, SigV4 refusals
and EventBridge's errors, raised by the SDK as its typed exceptions."""

from __future__ import annotations

import datetime as dt
import json
import types
from typing import Any

import boto3
import botocore.auth
import botocore.crt.auth
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError, ParamValidationError
from click.testing import CliRunner
from tests.awsapi.conftest import Server, error_of

from stellwerk.cli.main import cli

pytestmark = pytest.mark.slow


def test_put_events_lands_on_the_bus_as_cloudevents(server: Server) -> None:
    answer = server.admin.put_events(
        Entries=[
            {
                "Source": "com.shop.orders",
                "DetailType": "Order Placed",
                "Detail": json.dumps({"order": 1, "total": 12.5}),
                "Resources": ["arn:aws:shop:order/1"],
                "Time": dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC),
            },
            {"Source": "com.shop.orders", "DetailType": "Order Placed", "Detail": '{"order": 2}'},
        ]
    )
    assert answer["FailedEntryCount"] == 0
    ids = [entry["EventId"] for entry in answer["Entries"]]
    assert len(set(ids)) == 2
    stored = {e["id"]: e for e in server.on_bus("default", 2)}
    first = stored[ids[0]]
    assert first["source"] == "com.shop.orders"
    assert first["type"] == "Order Placed"
    assert first["data"] == {"order": 1, "total": 12.5}
    assert first["time"].startswith("2026-12-01T12:00:00")
    assert json.loads(first["awsresources"]) == ["arn:aws:shop:order/1"]
    assert stored[ids[1]]["data"] == {"order": 2}


def test_put_events_answers_each_entry(server: Server) -> None:
    answer = server.admin.put_events(
        Entries=[
            {"Source": "s", "DetailType": "t", "Detail": "{}"},
            {"Source": "s", "DetailType": "t", "Detail": "not json"},
            {"Source": "s", "DetailType": "t"},
            {"Source": "s", "DetailType": "t", "Detail": "{}", "EventBusName": "nowhere"},
        ]
    )
    assert answer["FailedEntryCount"] == 3
    first, malformed, missing, unknown_bus = answer["Entries"]
    assert "EventId" in first
    assert malformed["ErrorCode"] == "MalformedDetail"
    assert missing["ErrorCode"] == "InvalidArgument"
    assert "Detail is a required argument" in missing["ErrorMessage"]
    assert unknown_bus["ErrorCode"] == "ResourceNotFoundException"
    assert "nowhere" in unknown_bus["ErrorMessage"]


def test_an_entry_is_stored_compact_and_in_the_cloudevent_s_own_order(server: Server) -> None:
    # The entry is encoded straight to the stored CloudEvent, as `encode_event` encodes one.
    detail = {"name": "Zoë", "nested": {"list": [1, 2.5, None]}}
    answer = server.events(server.bootstrap.ingest_key).put_events(
        Entries=[
            {
                "Source": "com.shop",
                "DetailType": "Tick",
                "Detail": json.dumps(detail, indent=4),
                "Time": "2026-12-01T13:00:00+01:00",
            }
        ]
    )
    (event_id,) = [e["EventId"] for e in answer["Entries"]]
    stored = server.on_bus("default", 1000, until=event_id)[-1]
    assert stored["id"] == event_id
    assert list(stored)[:8] == [
        "specversion",
        "id",
        "source",
        "type",
        "time",
        "datacontenttype",
        "awsregion",
        "data",
    ]
    assert stored["time"] == "2026-12-01T12:00:00Z"
    assert stored["awsregion"] == "eu-central-1"
    assert stored["data"] == detail


def test_a_bus_that_enforces_schemas_refuses_an_entry_on_its_own(server: Server) -> None:
    # Its schema check reads the stored event back into a CloudEvent.
    schema = {"type": "object", "required": ["sku"], "properties": {"sku": {"type": "string"}}}
    assert server.native("PUT", "/v1/schemas/sku.added", json={"schema": schema}).is_success
    bus = server.native("PUT", "/v1/buses/checked", json={"schema_validation": "enforce"})
    assert bus.is_success
    answer = server.admin.put_events(
        Entries=[
            {
                "Source": "s",
                "DetailType": "sku.added",
                "Detail": json.dumps({"sku": "a"}),
                "EventBusName": "checked",
            },
            {
                "Source": "s",
                "DetailType": "sku.added",
                "Detail": json.dumps({"sku": 1}),
                "EventBusName": "checked",
            },
        ]
    )
    assert answer["FailedEntryCount"] == 1
    good, bad = answer["Entries"]
    assert "EventId" in good
    assert bad["ErrorCode"] == "InvalidArgument"
    assert "sku" in bad["ErrorMessage"]


def test_a_refusal_by_a_bus_lands_on_its_own_entry_among_other_buses_and_refusals(
    server: Server,
) -> None:
    # Each bus's events are numbered from 0 for ingest; its refusals come back by that number.
    schema = {"type": "object", "required": ["sku"], "properties": {"sku": {"type": "string"}}}
    assert server.native("PUT", "/v1/schemas/sku.added", json={"schema": schema}).is_success
    bus = server.native("PUT", "/v1/buses/checked", json={"schema_validation": "enforce"})
    assert bus.is_success

    def entry(sku: object, bus: str = "checked") -> dict[str, str]:
        detail = json.dumps({"sku": sku})
        return {"Source": "s", "DetailType": "sku.added", "Detail": detail, "EventBusName": bus}

    answer = server.admin.put_events(
        Entries=[
            entry(1, "default"),  # no schema check on the default bus
            entry(2),
            {"Source": "s", "DetailType": "t", "Detail": "[]"},
            entry("a"),
            entry(3),
            entry("b", "nowhere"),
            entry("c"),
        ]
    )
    codes = [e.get("ErrorCode", "taken") for e in answer["Entries"]]
    assert codes == [
        "taken",
        "InvalidArgument",
        "MalformedDetail",
        "taken",
        "InvalidArgument",
        "ResourceNotFoundException",
        "taken",
    ]
    assert answer["FailedEntryCount"] == 4
    assert all("sku" in answer["Entries"][n]["ErrorMessage"] for n in (1, 4))
    taken = [answer["Entries"][n]["EventId"] for n in (3, 6)]
    stored = server.on_bus("checked", 1000, until=taken[-1])
    assert [e["data"]["sku"] for e in stored if e["id"] in taken] == ["a", "c"]


def test_more_than_ten_entries_is_a_validation_error(server: Server) -> None:
    entries = [{"Source": "s", "DetailType": "t", "Detail": "{}"}] * 11
    with pytest.raises(ClientError) as exc:
        server.admin.put_events(Entries=entries)
    code, message = error_of(exc)
    assert code == "ValidationException"
    assert "less than or equal to 10" in message


def test_without_botocore_s_parameter_validation_the_server_refuses_the_same_calls(
    server: Server,
) -> None:
    """`Config(parameter_validation=False)`, which docs/eventbridge-api.md advises for
    throughput: what botocore would refuse before sending, the server refuses."""
    key = server.bootstrap.admin_key
    unchecked = boto3.client(
        "events",
        endpoint_url=server.url,
        region_name="eu-central-1",
        aws_access_key_id=key.split("_")[1],
        aws_secret_access_key=key,
        config=Config(parameter_validation=False, retries={"max_attempts": 1}),
    )
    with pytest.raises(ParamValidationError):  # the default client refuses before sending
        server.admin.put_events(Entries=[])
    calls: list[dict[str, Any]] = [{"Entries": []}, {}]
    for call in calls:
        with pytest.raises(ClientError) as exc:
            unchecked.put_events(**call)
        code, message = error_of(exc)
        assert code == "ValidationException"
        assert "Entries must have at least 1 member" in message
    answer = unchecked.put_events(
        Entries=[
            {"Source": "s", "DetailType": "t", "Detail": "{}"},
            {"Source": 1, "DetailType": "t", "Detail": "{}"},
            {"Source": "s", "DetailType": "t", "Detail": {"not": "a string"}},
        ]
    )
    assert answer["FailedEntryCount"] == 2
    taken, numeric_source, object_detail = answer["Entries"]
    assert "EventId" in taken
    assert numeric_source["ErrorCode"] == "InvalidArgument"
    assert "Source" in numeric_source["ErrorMessage"]
    assert object_detail["ErrorCode"] == "InvalidArgument"
    assert "Detail" in object_detail["ErrorMessage"]


def test_buses_are_created_described_listed_by_page_and_deleted(server: Server) -> None:
    client = server.admin
    created = client.create_event_bus(Name="orders", Description="shop orders")
    assert created["EventBusArn"].startswith("arn:aws:events:eu-central-1:")
    assert created["EventBusArn"].endswith(":event-bus/orders")
    with pytest.raises(client.exceptions.ResourceAlreadyExistsException):
        client.create_event_bus(Name="orders")
    described = client.describe_event_bus(Name="orders")
    assert described["Description"] == "shop orders"
    assert described["Arn"] == created["EventBusArn"]
    assert isinstance(described["CreationTime"], dt.datetime)
    # The same bus, seen through the native API.
    assert server.native("GET", "/v1/buses/orders").json()["description"] == "shop orders"
    client.create_event_bus(Name="ordersarchive")
    first = client.list_event_buses(NamePrefix="orders", Limit=1)
    assert [b["Name"] for b in first["EventBuses"]] == ["orders"]
    second = client.list_event_buses(NamePrefix="orders", Limit=1, NextToken=first["NextToken"])
    assert [b["Name"] for b in second["EventBuses"]] == ["ordersarchive"]
    assert "NextToken" not in second
    by_arn = client.put_events(
        Entries=[
            {
                "Source": "s",
                "DetailType": "t",
                "Detail": "{}",
                "EventBusName": created["EventBusArn"],
            }
        ]
    )
    assert by_arn["FailedEntryCount"] == 0
    client.delete_event_bus(Name="ordersarchive")
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.describe_event_bus(Name="ordersarchive")
    with pytest.raises(ClientError) as exc:
        client.delete_event_bus(Name="default")
    assert error_of(exc)[0] == "ValidationException"


def test_test_event_pattern_uses_eventbridge_matching(server: Server) -> None:
    event = json.dumps(
        {
            "id": "1",
            "account": "123456789012",
            "source": "com.shop",
            "time": "2026-12-04T00:00:00Z",
            "region": "eu-central-1",
            "detail-type": "Order Placed",
            "resources": [],
            "detail": {"total": 120},
        }
    )
    client = server.admin
    matching = json.dumps({"source": ["com.shop"], "detail": {"total": [{"numeric": [">", 100]}]}})
    missing = json.dumps({"detail": {"total": [{"numeric": ["<", 100]}]}})
    assert client.test_event_pattern(EventPattern=matching, Event=event)["Result"] is True
    assert client.test_event_pattern(EventPattern=missing, Event=event)["Result"] is False
    with pytest.raises(client.exceptions.InvalidEventPatternException):
        client.test_event_pattern(EventPattern='{"source": "not a list"}', Event=event)


def test_the_secret_is_the_whole_key_or_its_secret_part(server: Server) -> None:
    admin = server.bootstrap.admin_key
    by_part = server.events(admin, secret=admin.split("_", 2)[2])
    assert "default" in [b["Name"] for b in by_part.list_event_buses()["EventBuses"]]
    with pytest.raises(ClientError) as exc:
        server.events(admin, secret=admin.split("_", 2)[2][:-1]).list_event_buses()
    assert error_of(exc)[0] == "InvalidSignatureException"


def test_a_wrong_secret_an_unknown_key_and_a_narrow_scope_are_refused(server: Server) -> None:
    admin = server.bootstrap.admin_key
    wrong = server.events(admin[:-4] + "AAAA", access_key_id=admin.split("_")[1])
    with pytest.raises(ClientError) as exc:
        wrong.list_event_buses()
    assert error_of(exc)[0] == "InvalidSignatureException"
    unknown = server.events(admin, access_key_id="0123456789abcdef")
    with pytest.raises(ClientError) as exc:
        unknown.list_event_buses()
    assert error_of(exc)[0] == "UnrecognizedClientException"
    ingest = server.events(server.bootstrap.ingest_key)
    assert (
        ingest.put_events(Entries=[{"Source": "s", "DetailType": "t", "Detail": "{}"}])[
            "FailedEntryCount"
        ]
        == 0
    )
    with pytest.raises(ClientError) as exc:
        ingest.create_event_bus(Name="nope")
    assert error_of(exc)[0] == "AccessDeniedException"


def test_a_key_revoked_natively_stops_signing_at_once(server: Server) -> None:
    # The opened signing key is remembered per key, tied to the key's cached record.
    created = server.native("POST", "/v1/keys", json={"scope": "admin"}).json()
    signer = server.events(created["key"])
    assert signer.list_event_buses()["EventBuses"]
    assert server.native("DELETE", f"/v1/keys/{created['id']}").status_code == 200
    with pytest.raises(ClientError) as exc:
        signer.list_event_buses()
    assert error_of(exc)[0] == "UnrecognizedClientException"


def test_a_clock_skewed_beyond_five_minutes_is_refused(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Late(dt.datetime):
        @classmethod
        def utcnow(cls) -> Late:
            return cls.fromtimestamp(dt.datetime.now(dt.UTC).timestamp() - 600)

    if hasattr(botocore.auth, "get_current_datetime"):  # botocore 1.36 and later
        monkeypatch.setattr(
            botocore.auth,
            "get_current_datetime",
            lambda *args, **kwargs: Late.utcnow(),
        )
        # With awscrt (a dev dependency, for SigV4a) botocore signs SigV4 with it too.
        monkeypatch.setattr(
            botocore.crt.auth,
            "get_current_datetime",
            lambda *args, **kwargs: Late.utcnow(),
        )
    else:
        monkeypatch.setattr(botocore.auth, "datetime", types.SimpleNamespace(datetime=Late))
    with pytest.raises(ClientError) as exc:
        server.admin.list_event_buses()
    code, message = error_of(exc)
    assert code == "InvalidSignatureException"
    assert "Signature expired" in message


def signed_post(
    server: Server,
    signed: bytes,
    sent: bytes | None = None,
    *,
    target: str = "AWSEvents.PutEvents",
) -> httpx.Response:
    """A request signed by botocore's own SigV4 signer over `signed`, sending `sent`."""
    key = server.bootstrap.admin_key
    request = AWSRequest(
        method="POST",
        url=server.url + "/",
        data=signed,
        headers={
            "X-Amz-Target": target,
            "Content-Type": "application/x-amz-json-1.1",
        },
    )
    SigV4Auth(Credentials(key.split("_")[1], key), "events", "eu-central-1").add_auth(request)
    return httpx.post(
        server.url + "/",
        content=signed if sent is None else sent,
        headers=dict(request.headers.items()),
        timeout=30,
    )


def test_unknown_operations_bad_bodies_and_altered_bodies(server: Server) -> None:
    unknown = httpx.post(server.url + "/", headers={"X-Amz-Target": "AWSEvents.Nope"})
    assert unknown.status_code == 400
    assert unknown.json()["__type"] == "UnknownOperationException"
    unsigned = httpx.post(server.url + "/", headers={"X-Amz-Target": "AWSEvents.PutEvents"})
    assert unsigned.status_code == 400
    assert unsigned.json()["__type"] == "MissingAuthenticationTokenException"
    deep = b'{"Entries": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}"
    for body in (b"not json", b"[1, 2]", deep):
        refused = signed_post(server, body)
        assert refused.status_code == 400, refused.text
        assert refused.json()["__type"] == "SerializationException"
    # Nested past what a decoder can follow: refused as EventBridge refuses bad input, no 500.
    nested = "[" * 100_000 + "]" * 100_000
    deep_detail = json.dumps(
        {
            "Entries": [
                {"Source": 5, "DetailType": "t", "Detail": "{}"},
                {"Source": "s", "DetailType": "t", "Detail": '{"a": ' + nested + "}"},
            ]
        }
    ).encode()
    answer = signed_post(server, deep_detail).json()
    assert [e["ErrorCode"] for e in answer["Entries"]] == ["InvalidArgument", "MalformedDetail"]
    pattern_test = signed_post(
        server,
        json.dumps({"EventPattern": '{"source": ["s"]}', "Event": nested}).encode(),
        target="AWSEvents.TestEventPattern",
    )
    assert pattern_test.status_code == 400, pattern_test.text
    assert pattern_test.json()["__type"] == "ValidationException"
    huge = signed_post(server, b"{" + b" " * (2 * 1024 * 1024) + b"}")
    assert huge.status_code == 400
    assert huge.json()["__type"] == "ValidationException"
    entries = b'{"Entries": [{"Source": "s", "DetailType": "t", "Detail": "{}"}]}'
    assert signed_post(server, entries).json()["FailedEntryCount"] == 0
    altered = signed_post(server, entries, entries.replace(b'"s"', b'"x"'))
    assert altered.status_code == 400
    assert altered.json()["__type"] == "InvalidSignatureException"


def test_a_key_made_by_the_command_line_beside_the_server_signs_requests(server: Server) -> None:
    made = CliRunner().invoke(
        cli,
        [
            "keys",
            "create",
            "--tenant",
            "default",
            "--scope",
            "read",
            "--json",
            "--data-dir",
            str(server.data_dir),
        ],
    )
    assert made.exit_code == 0, made.output
    key = json.loads(made.output)["key"]
    names = [b["Name"] for b in server.events(key).list_event_buses()["EventBuses"]]
    assert "default" in names


def test_other_methods_on_the_root_are_not_this_apis(server: Server) -> None:
    assert httpx.get(server.url + "/").status_code == 404
    assert httpx.put(server.url + "/").status_code == 404


def test_an_entry_too_large_once_stored_fails_alone(server: Server) -> None:
    detail = json.dumps({"pad": "x" * 261_950})
    answer = server.admin.put_events(
        Entries=[
            {"Source": "s", "DetailType": "t", "Detail": detail},
            {"Source": "s", "DetailType": "t", "Detail": "{}"},
        ]
    )
    assert answer["FailedEntryCount"] == 1
    too_large, fine = answer["Entries"]
    assert too_large["ErrorCode"] == "InvalidArgument"
    assert "limit is 262144" in too_large["ErrorMessage"]
    assert "EventId" in fine

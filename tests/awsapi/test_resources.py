"""Connections, API destinations, archives, replays and tags through the EventBridge API
(boto3), over the native connections, archives and replays: an API destination target sends
with its connection's credentials, a replay re-delivers archived events, tags round-trip."""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import time
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError
from tests.awsapi.conftest import Server, error_of
from tests.awsapi.test_rules_and_targets import Receiver
from tests.polling import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    try:
        yield found
    finally:
        found.close()


def test_an_api_destination_target_sends_with_its_connection(
    server: Server, receiver: Receiver
) -> None:
    client = server.admin
    connection = client.create_connection(
        Name="crm",
        AuthorizationType="BASIC",
        AuthParameters={"BasicAuthParameters": {"Username": "shop", "Password": "s3cret"}},
    )
    assert connection["ConnectionState"] == "AUTHORIZED"
    described = client.describe_connection(Name="crm")
    assert described["AuthParameters"] == {"BasicAuthParameters": {"Username": "shop"}}
    with pytest.raises(client.exceptions.ResourceAlreadyExistsException):
        client.create_connection(
            Name="crm",
            AuthorizationType="API_KEY",
            AuthParameters={"ApiKeyAuthParameters": {"ApiKeyName": "x-k", "ApiKeyValue": "v"}},
        )
    destination = client.create_api_destination(
        Name="crm-orders",
        ConnectionArn=connection["ConnectionArn"],
        InvocationEndpoint=receiver.url + "/crm",
        HttpMethod="POST",
        InvocationRateLimitPerSecond=50,
    )
    with pytest.raises(ClientError) as exc:
        client.create_api_destination(
            Name="crm-get",
            ConnectionArn=connection["ConnectionArn"],
            InvocationEndpoint=receiver.url + "/crm",
            HttpMethod="GET",
        )
    assert error_of(exc)[0] == "ValidationException"
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.create_api_destination(
            Name="nowhere",
            ConnectionArn="arn:aws:events:eu-central-1:x:connection/none",
            InvocationEndpoint=receiver.url,
            HttpMethod="POST",
        )
    listed = client.list_api_destinations(NamePrefix="crm")["ApiDestinations"]
    assert [d["Name"] for d in listed] == ["crm-orders"]
    assert listed[0]["InvocationRateLimitPerSecond"] == 50
    client.create_event_bus(Name="crm-bus")
    client.put_rule(Name="to-crm", EventBusName="crm-bus", EventPattern='{"source": ["shop"]}')
    put = client.put_targets(
        Rule="to-crm",
        EventBusName="crm-bus",
        Targets=[{"Id": "crm", "Arn": destination["ApiDestinationArn"]}],
    )
    assert put["FailedEntryCount"] == 0
    shown = client.list_targets_by_rule(Rule="to-crm", EventBusName="crm-bus")["Targets"]
    assert shown[0]["Arn"] == destination["ApiDestinationArn"]
    client.put_events(
        Entries=[
            {"Source": "shop", "DetailType": "Sale", "Detail": "{}", "EventBusName": "crm-bus"}
        ]
    )
    headers, envelope = receiver.next("/crm")
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"shop:s3cret").decode()
    assert envelope["detail-type"] == "Sale"
    client.remove_targets(Rule="to-crm", EventBusName="crm-bus", Ids=["crm"])
    client.delete_api_destination(Name="crm-orders")
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.describe_api_destination(Name="crm-orders")
    client.delete_connection(Name="crm")
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.describe_connection(Name="crm")


def test_an_archive_is_replayed_to_the_rules_of_its_bus(server: Server, receiver: Receiver) -> None:
    client = server.admin
    bus_arn = client.create_event_bus(Name="kept")["EventBusArn"]
    archive = client.create_archive(
        ArchiveName="kept-all", EventSourceArn=bus_arn, Description="all of it", RetentionDays=7
    )
    assert archive["ArchiveArn"].endswith(":archive/kept-all")
    with pytest.raises(client.exceptions.ResourceAlreadyExistsException):
        client.create_archive(ArchiveName="kept-all", EventSourceArn=bus_arn)
    wait_until(
        lambda: client.describe_archive(ArchiveName="kept-all")["State"] == "ENABLED",
        what="the archive taken in",
    )
    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    client.put_events(
        Entries=[
            {
                "Source": "old",
                "DetailType": "Kept",
                "Detail": json.dumps({"n": n}),
                "EventBusName": "kept",
            }
            for n in range(3)
        ]
    )
    wait_until(
        lambda: client.describe_archive(ArchiveName="kept-all")["EventCount"] >= 3,
        what="three events archived",
    )
    described = client.describe_archive(ArchiveName="kept-all")
    assert described["EventSourceArn"] == bus_arn
    assert described["RetentionDays"] == 7
    assert [a["ArchiveName"] for a in client.list_archives(EventSourceArn=bus_arn)["Archives"]] == [
        "kept-all"
    ]
    # A rule made after the events: only a replay brings them to it.
    rule = client.put_rule(Name="late", EventBusName="kept", EventPattern='{"source": ["old"]}')
    client.put_targets(
        Rule="late", EventBusName="kept", Targets=[{"Id": "r", "Arn": receiver.url + "/late"}]
    )
    with pytest.raises(ClientError) as exc:
        client.start_replay(
            ReplayName="future",
            EventSourceArn=archive["ArchiveArn"],
            EventStartTime=before,
            EventEndTime=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
            Destination={"Arn": bus_arn},
        )
    assert error_of(exc)[0] == "ValidationException"
    # The SDK sends times in whole seconds: the window must end a whole second after them.
    last = math.ceil(time.time())
    wait_until(lambda: time.time() >= last, what="the next whole second")
    started = client.start_replay(
        ReplayName="again",
        EventSourceArn=archive["ArchiveArn"],
        EventStartTime=before,
        EventEndTime=dt.datetime.now(dt.UTC),
        Destination={"Arn": bus_arn, "FilterArns": [rule["RuleArn"]]},
    )
    assert started["State"] in ("STARTING", "RUNNING", "COMPLETED")
    got = sorted(receiver.next("/late")[1]["detail"]["n"] for _ in range(3))
    assert got == [0, 1, 2]
    done = wait_until(
        lambda: client.describe_replay(ReplayName="again"),
        accept=lambda r: r["State"] == "COMPLETED",
        what="the replay completed",
    )
    assert done["Destination"]["FilterArns"] == [rule["RuleArn"]]
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.describe_replay(ReplayName="never")
    client.delete_archive(ArchiveName="kept-all")
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.describe_archive(ArchiveName="kept-all")


def test_tags_are_set_listed_and_removed(server: Server) -> None:
    client = server.admin
    arn = client.create_event_bus(Name="tagged")["EventBusArn"]
    client.tag_resource(
        ResourceARN=arn, Tags=[{"Key": "team", "Value": "shop"}, {"Key": "env", "Value": "prod"}]
    )
    client.tag_resource(ResourceARN=arn, Tags=[{"Key": "env", "Value": "test"}])
    tags = client.list_tags_for_resource(ResourceARN=arn)["Tags"]
    assert tags == [{"Key": "env", "Value": "test"}, {"Key": "team", "Value": "shop"}]
    client.untag_resource(ResourceARN=arn, TagKeys=["team"])
    assert client.list_tags_for_resource(ResourceARN=arn)["Tags"] == [
        {"Key": "env", "Value": "test"}
    ]
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.list_tags_for_resource(ResourceARN=arn.replace("tagged", "untagged"))
    with pytest.raises(client.exceptions.LimitExceededException):
        client.tag_resource(
            ResourceARN=arn, Tags=[{"Key": f"k{i}", "Value": "v"} for i in range(60)]
        )


def test_a_native_query_key_connection_is_described_as_a_secret_query_parameter(
    server: Server,
) -> None:
    made = server.native(
        "PUT",
        "/v1/connections/ga4-key",
        json={"type": "api_key_query", "parameter": "api_secret", "value": "hunter2"},
    )
    assert made.status_code == 201, made.text
    described = server.admin.describe_connection(Name="ga4-key")
    assert described["AuthorizationType"] == "API_KEY"
    query = [{"Key": "api_secret", "IsValueSecret": True}]
    assert described["AuthParameters"] == {
        "InvocationHttpParameters": {"QueryStringParameters": query}
    }
    assert "hunter2" not in json.dumps(described, default=str)


def test_http_parameters_fill_the_destination_s_path_query_and_headers(
    server: Server, receiver: Receiver
) -> None:
    client = server.admin
    connection = client.create_connection(
        Name="erp",
        AuthorizationType="API_KEY",
        AuthParameters={"ApiKeyAuthParameters": {"ApiKeyName": "x-api-key", "ApiKeyValue": "k1"}},
    )
    destination = client.create_api_destination(
        Name="erp-lines",
        ConnectionArn=connection["ConnectionArn"],
        InvocationEndpoint=receiver.url + "/shops/*/lines?v=2",
        HttpMethod="POST",
    )
    client.create_event_bus(Name="erp-bus")
    client.put_rule(Name="to-erp", EventBusName="erp-bus", EventPattern='{"source": ["erp"]}')
    parameters = {
        "PathParameterValues": ["north 1"],
        "HeaderParameters": {"X-Shop": "north", "X-API-Key": "not the connection's"},
        "QueryStringParameters": {"region": "eu"},
    }
    put = client.put_targets(
        Rule="to-erp",
        EventBusName="erp-bus",
        Targets=[
            {"Id": "erp", "Arn": destination["ApiDestinationArn"], "HttpParameters": parameters},
            {
                "Id": "bus",
                "Arn": "arn:aws:events:eu-central-1:default:event-bus/default",
                "HttpParameters": {"HeaderParameters": {"X-Shop": "north"}},
            },
            {
                "Id": "two-values",
                "Arn": destination["ApiDestinationArn"],
                "HttpParameters": {"PathParameterValues": ["a", "b"]},
            },
            {
                "Id": "own-header",
                "Arn": destination["ApiDestinationArn"],
                "HttpParameters": {
                    "PathParameterValues": ["a"],
                    "HeaderParameters": {"Webhook-Signature": "forged"},
                },
            },
        ],
    )
    refused = {f["TargetId"]: f for f in put["FailedEntries"]}
    assert sorted(refused) == ["bus", "own-header", "two-values"]
    assert {f["ErrorCode"] for f in refused.values()} == {"ValidationException"}
    assert "API destinations and http(s) targets" in refused["bus"]["ErrorMessage"]
    assert "2 values for the 1 '*' wildcards" in refused["two-values"]["ErrorMessage"]
    assert "target's own" in refused["own-header"]["ErrorMessage"]
    shown = client.list_targets_by_rule(Rule="to-erp", EventBusName="erp-bus")["Targets"]
    assert [(t["Id"], t["HttpParameters"]) for t in shown] == [("erp", parameters)]
    client.put_events(
        Entries=[{"Source": "erp", "DetailType": "Line", "Detail": "{}", "EventBusName": "erp-bus"}]
    )
    headers, envelope = receiver.next("/shops/north%201/lines?v=2&region=eu")
    assert headers["X-Shop"] == "north"
    # The connection's authorization wins, sent once.
    assert [v for k, v in headers.items() if k.lower() == "x-api-key"] == ["k1"]
    assert envelope["detail-type"] == "Line"


def test_json_path_values_are_taken_from_each_event_as_eventbridge_does(
    server: Server, receiver: Receiver
) -> None:
    client = server.admin
    connection = client.create_connection(
        Name="ledger",
        AuthorizationType="API_KEY",
        AuthParameters={"ApiKeyAuthParameters": {"ApiKeyName": "x-api-key", "ApiKeyValue": "k2"}},
    )
    destination = client.create_api_destination(
        Name="ledger-orders",
        ConnectionArn=connection["ConnectionArn"],
        InvocationEndpoint=receiver.url + "/customers/*/orders/*",
        HttpMethod="POST",
    )
    arn = destination["ApiDestinationArn"]
    client.create_event_bus(Name="ledger-bus")
    client.put_rule(
        Name="to-ledger", EventBusName="ledger-bus", EventPattern='{"source": ["ledger"]}'
    )
    parameters = {
        "PathParameterValues": ["$.detail.customer.id", "$.detail.order"],
        "HeaderParameters": {
            "X-Region": "$.region",
            "X-Items": "$.detail.items",
            "X-Nothing": "$.detail.nothing",
            "X-Fixed": "fixed",
        },
        "QueryStringParameters": {"first": "$.detail.items[0]", "flag": "$.detail.rush"},
    }
    put = client.put_targets(
        Rule="to-ledger",
        EventBusName="ledger-bus",
        Targets=[
            {
                "Id": "ledger",
                "Arn": arn,
                "HttpParameters": parameters,
                "DeadLetterConfig": {"Arn": "arn:aws:sqs:eu-central-1:123456789012:ledger-dlq"},
            },
            {
                "Id": "not-a-path",
                "Arn": arn,
                "HttpParameters": {"PathParameterValues": ["$.detail[", "b"]},
            },
            {
                "Id": "transformed",
                "Arn": arn,
                "InputPath": "$.detail",
                "HttpParameters": {"PathParameterValues": ["$.detail.order", "b"]},
            },
        ],
    )
    refused = {f["TargetId"]: f["ErrorMessage"] for f in put["FailedEntries"]}
    assert sorted(refused) == ["not-a-path", "transformed"]
    assert "'$.detail[' is not a JSON path" in refused["not-a-path"]
    assert "input transformer" in refused["transformed"]
    shown = client.list_targets_by_rule(Rule="to-ledger", EventBusName="ledger-bus")["Targets"]
    assert [(t["Id"], t["HttpParameters"]) for t in shown] == [("ledger", parameters)]

    detail = {"customer": {"id": "c 7/x"}, "order": 42, "items": ["a&b", "c"], "rush": True}
    client.put_events(
        Entries=[
            {
                "Source": "ledger",
                "DetailType": "Order",
                "Detail": json.dumps(detail),
                "EventBusName": "ledger-bus",
            }
        ]
    )
    headers, envelope = receiver.next("/customers/c%207%2Fx/orders/42?first=a%26b&flag=true")
    assert envelope["detail"] == detail
    assert headers["X-Region"] == "eu-central-1"
    assert headers["X-Items"] == '["a&b","c"]'
    assert headers["X-Fixed"] == "fixed"
    assert "X-Nothing" not in headers
    assert headers["x-api-key"] == "k2"

    # An event without a value for a path value cannot be sent: given up, to the dead letters.
    client.put_events(
        Entries=[
            {
                "Source": "ledger",
                "DetailType": "Order",
                "Detail": json.dumps({"order": 43}),
                "EventBusName": "ledger-bus",
            }
        ]
    )

    def dead() -> list[dict[str, Any]]:
        page = server.native("GET", "/v1/buses/ledger-bus/dead-letters").json()
        letters: list[dict[str, Any]] = page["dead_letters"]
        return letters

    (letter,) = wait_until(dead, within=30)
    assert letter["target"] == "ledger"
    assert "path value $.detail.customer.id: the event has no value there" in letter["last_error"]
    assert letter["payload"]["detail"] == {"order": 43}


def test_a_changed_api_destination_takes_its_targets_along(
    server: Server, receiver: Receiver
) -> None:
    client = server.admin
    connection = client.create_connection(
        Name="ops",
        AuthorizationType="API_KEY",
        AuthParameters={"ApiKeyAuthParameters": {"ApiKeyName": "x-api-key", "ApiKeyValue": "k"}},
    )
    destination = client.create_api_destination(
        Name="ops-hook",
        ConnectionArn=connection["ConnectionArn"],
        InvocationEndpoint=receiver.url + "/v1",
        HttpMethod="POST",
    )
    client.create_event_bus(Name="ops-bus")
    client.put_rule(Name="to-ops", EventBusName="ops-bus", EventPattern='{"source": ["ops"]}')
    client.put_targets(
        Rule="to-ops",
        EventBusName="ops-bus",
        Targets=[{"Id": "ops", "Arn": destination["ApiDestinationArn"]}],
    )
    entry = {"Source": "ops", "DetailType": "Deploy", "Detail": "{}", "EventBusName": "ops-bus"}
    client.put_events(Entries=[entry])
    receiver.next("/v1")

    updated = client.update_api_destination(
        Name="ops-hook", InvocationEndpoint=receiver.url + "/v2", InvocationRateLimitPerSecond=5
    )
    assert updated["ApiDestinationArn"] == destination["ApiDestinationArn"]
    described = client.describe_api_destination(Name="ops-hook")
    assert described["InvocationEndpoint"] == receiver.url + "/v2"
    assert described["InvocationRateLimitPerSecond"] == 5
    shown = client.list_targets_by_rule(Rule="to-ops", EventBusName="ops-bus")["Targets"]
    assert [t["Arn"] for t in shown] == [destination["ApiDestinationArn"]]
    client.put_events(Entries=[entry])
    headers, _ = receiver.next("/v2")
    assert headers["x-api-key"] == "k"

    # A change one of its targets cannot take changes nothing: here a path value that the new
    # endpoint has no wildcard for.
    starred = client.create_api_destination(
        Name="ops-items",
        ConnectionArn=connection["ConnectionArn"],
        InvocationEndpoint=receiver.url + "/items/*",
        HttpMethod="POST",
    )
    client.put_targets(
        Rule="to-ops",
        EventBusName="ops-bus",
        Targets=[
            {
                "Id": "items",
                "Arn": starred["ApiDestinationArn"],
                "HttpParameters": {"PathParameterValues": ["i-1"]},
            }
        ],
    )
    with pytest.raises(ClientError) as exc:
        client.update_api_destination(Name="ops-items", InvocationEndpoint=receiver.url + "/items")
    code, message = error_of(exc)
    assert code == "ValidationException"
    assert "to-ops" in message
    described = client.describe_api_destination(Name="ops-items")
    assert described["InvocationEndpoint"] == receiver.url + "/items/*"
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.update_api_destination(Name="nowhere", InvocationEndpoint=receiver.url)

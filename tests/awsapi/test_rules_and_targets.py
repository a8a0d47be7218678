"""Rules and targets through the EventBridge API (boto3): a rule made there sees events in
EventBridge's envelope and its targets get that envelope, whether the event came through
PutEvents or native ingest; native rules keep seeing CloudEvents; partial failures per target."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from botocore.exceptions import ClientError
from tests.awsapi.conftest import Server, error_of

pytestmark = pytest.mark.slow


class Receiver:
    """An HTTP receiver on loopback in a thread: each POST's path, headers and JSON body."""

    def __init__(self) -> None:
        self.got: queue.Queue[tuple[str, dict[str, str], Any]] = queue.Queue()
        got = self.got

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                got.put((self.path, dict(self.headers.items()), json.loads(body)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever)
        self._thread.start()

    def next(self, path: str) -> tuple[dict[str, str], Any]:
        """The next request to `path` (others are put back for their own waiters)."""
        others = []
        try:
            while True:
                at, headers, body = self.got.get(timeout=30)
                if at == path:
                    return headers, body
                others.append((at, headers, body))
        finally:
            for other in others:
                self.got.put(other)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    try:
        yield found
    finally:
        found.close()


PATTERN = {
    "source": ["com.shop"],
    "detail-type": ["Order Placed"],
    "detail": {"total": [{"numeric": [">", 100]}]},
}


def test_a_rule_made_here_sees_and_sends_eventbridge_envelopes(
    server: Server, receiver: Receiver
) -> None:
    client = server.admin
    client.create_event_bus(Name="shop")
    arn = client.put_rule(Name="big-orders", EventBusName="shop", EventPattern=json.dumps(PATTERN))[
        "RuleArn"
    ]
    assert arn.endswith(":rule/shop/big-orders")
    answer = client.put_targets(
        Rule="big-orders",
        EventBusName="shop",
        Targets=[
            {"Id": "whole", "Arn": receiver.url + "/whole"},
            {
                "Id": "shaped",
                "Arn": receiver.url + "/shaped",
                "InputTransformer": {
                    "InputPathsMap": {"total": "$.detail.total", "type": "$.detail-type"},
                    "InputTemplate": '{"what": <type>, "total": <total>}',
                },
            },
            {"Id": "lambda", "Arn": "arn:aws:lambda:eu-central-1:1:function:f"},
        ],
    )
    assert answer["FailedEntryCount"] == 1
    assert answer["FailedEntries"][0]["TargetId"] == "lambda"
    client.put_events(
        Entries=[
            {
                "Source": "com.shop",
                "DetailType": "Order Placed",
                "Detail": '{"total": 5}',
                "EventBusName": "shop",
            },
            {
                "Source": "com.shop",
                "DetailType": "Order Placed",
                "Detail": '{"total": 250}',
                "Resources": ["arn:shop:order/7"],
                "EventBusName": "shop",
            },
        ]
    )
    headers, envelope = receiver.next("/whole")
    assert headers["Content-Type"] == "application/json"
    assert envelope["version"] == "0"
    assert envelope["detail-type"] == "Order Placed"
    assert envelope["source"] == "com.shop"
    assert envelope["account"] == server.bootstrap.tenant
    assert envelope["region"] == "eu-central-1"
    assert envelope["resources"] == ["arn:shop:order/7"]
    assert envelope["detail"] == {"total": 250}
    assert receiver.next("/shaped")[1] == {"what": "Order Placed", "total": 250}
    # A CloudEvent sent natively is seen by the same rule in the envelope too.
    native = server.native(
        "POST",
        "/v1/buses/shop/events",
        json={
            "specversion": "1.0",
            "id": "n-1",
            "source": "com.shop",
            "type": "Order Placed",
            "data": {"total": 101},
        },
    )
    assert native.status_code == 202, native.text
    _, envelope = receiver.next("/whole")
    assert (envelope["id"], envelope["detail"], envelope["resources"]) == (
        "n-1",
        {"total": 101},
        [],
    )
    assert envelope["region"] == "local"
    # The events of the small order never arrived: the next one is the native one's shaped copy.
    assert receiver.next("/shaped")[1] == {"what": "Order Placed", "total": 101}
    assert receiver.got.empty()


def test_native_rules_keep_seeing_cloudevents_of_put_events(
    server: Server, receiver: Receiver
) -> None:
    client = server.admin
    client.create_event_bus(Name="native")
    saved = server.native(
        "PUT",
        "/v1/buses/native/rules/all",
        json={
            "pattern": {"type": ["Thing"]},
            "targets": [{"id": "hook", "type": "http", "url": receiver.url + "/native"}],
        },
    )
    assert saved.status_code in (200, 201), saved.text
    client.put_events(
        Entries=[
            {"Source": "s", "DetailType": "Thing", "Detail": '{"a": 1}', "EventBusName": "native"}
        ]
    )
    headers, event = receiver.next("/native")
    assert headers["Content-Type"] == "application/cloudevents+json"
    assert (event["type"], event["source"], event["data"]) == ("Thing", "s", {"a": 1})
    # Visible through this API too, its pattern as saved.
    described = client.describe_rule(Name="all", EventBusName="native")
    assert json.loads(described["EventPattern"]) == {"type": ["Thing"]}
    assert described["State"] == "ENABLED"


def test_rule_operations_and_their_errors(server: Server) -> None:
    client = server.admin
    client.create_event_bus(Name="ops")
    with pytest.raises(client.exceptions.InvalidEventPatternException):
        client.put_rule(Name="bad", EventBusName="ops", EventPattern='{"source": "x"}')
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.describe_rule(Name="none", EventBusName="ops")
    for name in ("r-a", "r-b", "s-c"):
        client.put_rule(
            Name=name, EventBusName="ops", EventPattern='{"source": ["x"]}', Description=name
        )
    first = client.list_rules(EventBusName="ops", NamePrefix="r-", Limit=1)
    second = client.list_rules(EventBusName="ops", NamePrefix="r-", NextToken=first["NextToken"])
    assert [r["Name"] for r in first["Rules"] + second["Rules"]] == ["r-a", "r-b"]
    client.disable_rule(Name="r-a", EventBusName="ops")
    assert client.describe_rule(Name="r-a", EventBusName="ops")["State"] == "DISABLED"
    client.enable_rule(Name="r-a", EventBusName="ops")
    assert client.describe_rule(Name="r-a", EventBusName="ops")["State"] == "ENABLED"
    target = {
        "Id": "t",
        "Arn": "https://example.com/hook",
        "RetryPolicy": {"MaximumRetryAttempts": 3, "MaximumEventAgeInSeconds": 600},
    }
    client.put_targets(Rule="r-a", EventBusName="ops", Targets=[target])
    # PutRule again keeps the rule's targets, as EventBridge does.
    client.put_rule(Name="r-a", EventBusName="ops", EventPattern='{"source": ["y"]}')
    listed = client.list_targets_by_rule(Rule="r-a", EventBusName="ops")["Targets"]
    assert listed == [target]
    by_target = client.list_rule_names_by_target(
        TargetArn="https://example.com/hook", EventBusName="ops"
    )
    assert by_target["RuleNames"] == ["r-a"]
    with pytest.raises(ClientError) as exc:
        client.delete_rule(Name="r-a", EventBusName="ops")
    assert error_of(exc) == ("ValidationException", "Rule can't be deleted since it has targets.")
    removed = client.remove_targets(Rule="r-a", EventBusName="ops", Ids=["t", "nope"])
    assert removed["FailedEntryCount"] == 1
    assert removed["FailedEntries"][0]["TargetId"] == "nope"
    client.delete_rule(Name="r-a", EventBusName="ops")
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.describe_rule(Name="r-a", EventBusName="ops")
    with pytest.raises(ClientError) as exc:
        client.put_rule(Name="sched", EventBusName="ops", ScheduleExpression="rate(5 minutes)")
    assert error_of(exc) == (
        "ValidationException",
        "ScheduleExpression is supported only on the default event bus.",
    )
    with pytest.raises(ClientError) as exc:
        client.put_rule(Name="sched", ScheduleExpression="rate(5 minute)")
    assert error_of(exc)[0] == "ValidationException"
    client.put_rule(Name="sched", ScheduleExpression="cron(0 12 ? * MON-FRI *)")
    described = client.describe_rule(Name="sched")
    assert described["ScheduleExpression"] == "cron(0 12 ? * MON-FRI *)"
    assert "EventPattern" not in described
    client.delete_rule(Name="sched")

"""Every operation the EventBridge API answers, with the scope a key needs for it."""

from __future__ import annotations

from typing import Final

from stellwerk.auth import Scope
from stellwerk.awsapi import endpoints_ops, rules_ops
from stellwerk.awsapi import resources_ops as res
from stellwerk.awsapi.operations import (
    Operation,
    create_event_bus,
    delete_event_bus,
    describe_event_bus,
    list_event_buses,
    put_events_params,
    test_event_pattern,
)

OPERATIONS: Final[dict[str, Operation]] = {
    "PutEvents": Operation(Scope.INGEST, endpoints_ops.put_events, put_events_params),
    "TestEventPattern": Operation(Scope.READ, test_event_pattern),
    "CreateEventBus": Operation(Scope.ADMIN, create_event_bus),
    "DeleteEventBus": Operation(Scope.ADMIN, delete_event_bus),
    "DescribeEventBus": Operation(Scope.READ, describe_event_bus),
    "ListEventBuses": Operation(Scope.READ, list_event_buses),
    "PutRule": Operation(Scope.ADMIN, rules_ops.put_rule),
    "DescribeRule": Operation(Scope.READ, rules_ops.describe_rule),
    "ListRules": Operation(Scope.READ, rules_ops.list_rules),
    "DeleteRule": Operation(Scope.ADMIN, rules_ops.delete_rule),
    "EnableRule": Operation(Scope.ADMIN, rules_ops.enable_rule),
    "DisableRule": Operation(Scope.ADMIN, rules_ops.disable_rule),
    "ListRuleNamesByTarget": Operation(Scope.READ, rules_ops.list_rule_names_by_target),
    "PutTargets": Operation(Scope.ADMIN, rules_ops.put_targets),
    "RemoveTargets": Operation(Scope.ADMIN, rules_ops.remove_targets),
    "ListTargetsByRule": Operation(Scope.READ, rules_ops.list_targets_by_rule),
    "CreateConnection": Operation(Scope.ADMIN, res.create_connection),
    "DescribeConnection": Operation(Scope.READ, res.describe_connection),
    "DeleteConnection": Operation(Scope.ADMIN, res.delete_connection),
    "CreateApiDestination": Operation(Scope.ADMIN, res.create_api_destination),
    "DescribeApiDestination": Operation(Scope.READ, res.describe_api_destination),
    "ListApiDestinations": Operation(Scope.READ, res.list_api_destinations),
    "UpdateApiDestination": Operation(Scope.ADMIN, res.update_api_destination),
    "DeleteApiDestination": Operation(Scope.ADMIN, res.delete_api_destination),
    "CreateArchive": Operation(Scope.ADMIN, res.create_archive),
    "DescribeArchive": Operation(Scope.READ, res.describe_archive),
    "ListArchives": Operation(Scope.READ, res.list_archives),
    "DeleteArchive": Operation(Scope.ADMIN, res.delete_archive),
    "StartReplay": Operation(Scope.ADMIN, res.start_replay),
    "DescribeReplay": Operation(Scope.READ, res.describe_replay),
    "CancelReplay": Operation(Scope.ADMIN, res.cancel_replay),
    "CreateEndpoint": Operation(Scope.ADMIN, endpoints_ops.create_endpoint),
    "DescribeEndpoint": Operation(Scope.READ, endpoints_ops.describe_endpoint),
    "ListEndpoints": Operation(Scope.READ, endpoints_ops.list_endpoints),
    "UpdateEndpoint": Operation(Scope.ADMIN, endpoints_ops.update_endpoint),
    "DeleteEndpoint": Operation(Scope.ADMIN, endpoints_ops.delete_endpoint),
    "TagResource": Operation(Scope.ADMIN, res.tag_resource),
    "UntagResource": Operation(Scope.ADMIN, res.untag_resource),
    "ListTagsForResource": Operation(Scope.READ, res.list_tags_for_resource),
}

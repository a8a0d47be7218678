"""EventBridge's rule and target operations over the native rules: a rule made here sees events
in EventBridge's envelope (`view: eventbridge`), and its targets are Stellwerk's targets, named
by ARN (docs/eventbridge-api.md, "Rules and targets")."""

from __future__ import annotations

import contextlib
from typing import Any, Final, Literal

import msgspec

from stellwerk.awsapi.errors import AwsError, not_found, validation
from stellwerk.awsapi.operations import DEFAULT_BUS, Call, bus_name, paginate
from stellwerk.awsapi.store import ApiDestination
from stellwerk.patterns import InvalidPatternError, compile_pattern
from stellwerk.rules import (
    HttpParameters,
    InvalidScheduleError,
    RetryPolicy,
    Rule,
    RuleInput,
    TargetSpec,
    TransformerSpec,
    parse_schedule,
    validate_rule,
)
from stellwerk.service import InvalidRequest, NotFound, ServiceError

MAX_TARGETS_PER_CALL: Final = 10
_STATES: Final[dict[str, Literal["enabled", "disabled"]]] = {
    "ENABLED": "enabled",
    "DISABLED": "disabled",
}


def _bus(call: Call) -> str:
    return bus_name(call.string("EventBusName", default=DEFAULT_BUS) or DEFAULT_BUS)


def rule_arn(call: Call, bus: str, name: str) -> str:
    return call.arn(f"rule/{name}" if bus == DEFAULT_BUS else f"rule/{bus}/{name}")


async def _rule(call: Call, bus: str, name: str) -> Rule:
    try:
        return await call.platform.rules.get(call.principal, bus, name)
    except NotFound:
        raise not_found(f"Rule {name} does not exist on EventBus {bus}.") from None


async def _save(call: Call, bus: str, name: str, body: RuleInput) -> None:
    try:
        await call.platform.rules.put(call.principal, bus, name, body)
    except NotFound:
        raise not_found(f"Event bus {bus} does not exist.") from None


def _input(rule: Rule, **changes: Any) -> RuleInput:
    values = {
        "pattern": rule.pattern,
        "targets": rule.targets,
        "state": rule.state,
        "description": rule.description,
        "view": rule.view,
        "schedule": rule.schedule,
        "sites": rule.sites,
        **changes,
    }
    return RuleInput(**values)


# Rules ---------------------------------------------------------------------------------------


async def put_rule(call: Call) -> dict[str, Any]:
    name = call.string("Name", required=True)
    bus = _bus(call)
    text = call.string("EventPattern")
    schedule = call.string("ScheduleExpression")
    if not text and not schedule:
        raise validation("Parameter(s) EventPattern or ScheduleExpression must be specified.")
    pattern: dict[str, Any] | None = None
    if text:
        try:
            pattern = compile_pattern(text).source
        except InvalidPatternError as exc:
            raise AwsError(
                "InvalidEventPatternException", f"Event pattern is not valid. Reason: {exc}"
            ) from None
    if schedule:
        if text:
            raise validation("A rule has an EventPattern or a ScheduleExpression, not both.")
        if bus != DEFAULT_BUS:
            raise validation("ScheduleExpression is supported only on the default event bus.")
        try:
            parse_schedule(schedule)
        except InvalidScheduleError as exc:
            raise validation(f"Parameter ScheduleExpression is not valid: {exc}") from None
    state = _STATES.get(call.string("State", default="ENABLED"))
    if state is None:
        raise validation("State must be ENABLED or DISABLED.")
    changes: dict[str, Any] = {
        "pattern": pattern,
        "schedule": schedule or None,
        "state": state,
        "description": call.string("Description"),
        "view": "eventbridge",
    }
    try:
        existing = await call.platform.rules.get(call.principal, bus, name)
    except NotFound:
        existing = None
    body = RuleInput(**changes) if existing is None else _input(existing, **changes)
    await _save(call, bus, name, body)  # as EventBridge: an existing rule's targets stay
    return {"RuleArn": rule_arn(call, bus, name)}


def _described(call: Call, rule: Rule) -> dict[str, Any]:
    return {
        "Name": rule.name,
        "Arn": rule_arn(call, rule.bus, rule.name),
        **(
            {"EventPattern": msgspec.json.encode(rule.pattern).decode()}
            if rule.pattern is not None
            else {}
        ),
        **({"ScheduleExpression": rule.schedule} if rule.schedule else {}),
        "State": rule.state.upper(),
        **({"Description": rule.description} if rule.description else {}),
        "EventBusName": rule.bus,
    }


async def describe_rule(call: Call) -> dict[str, Any]:
    bus = _bus(call)
    rule = await _rule(call, bus, call.string("Name", required=True))
    return {**_described(call, rule), "CreatedBy": str(call.principal.tenant)}


async def list_rules(call: Call) -> dict[str, Any]:
    bus = _bus(call)
    prefix = call.string("NamePrefix")
    try:
        rules = await call.platform.rules.all(call.principal, bus)
    except NotFound:
        raise not_found(f"Event bus {bus} does not exist.") from None
    chosen = sorted((r for r in rules if r.name.startswith(prefix)), key=lambda r: r.name)
    page, token = paginate(call, chosen, lambda r: r.name)
    answer: dict[str, Any] = {"Rules": [_described(call, r) for r in page]}
    if token:
        answer["NextToken"] = token
    return answer


async def delete_rule(call: Call) -> dict[str, Any]:
    bus = _bus(call)
    name = call.string("Name", required=True)
    try:
        rule = await call.platform.rules.get(call.principal, bus, name)
    except NotFound:
        return {}  # as EventBridge: deleting a rule that is not there succeeds
    if rule.targets and not call.params.get("Force"):
        raise validation("Rule can't be deleted since it has targets.")
    with contextlib.suppress(NotFound):  # deleted meanwhile
        await call.platform.rules.delete(call.principal, bus, name)
    return {}


async def enable_rule(call: Call) -> dict[str, Any]:
    return await _set_state(call, "enabled")


async def disable_rule(call: Call) -> dict[str, Any]:
    return await _set_state(call, "disabled")


async def _set_state(call: Call, state: str) -> dict[str, Any]:
    bus = _bus(call)
    rule = await _rule(call, bus, call.string("Name", required=True))
    await _save(call, bus, rule.name, _input(rule, state=state))
    return {}


async def list_rule_names_by_target(call: Call) -> dict[str, Any]:
    bus = _bus(call)
    arn = call.string("TargetArn", required=True)
    try:
        rules = await call.platform.rules.all(call.principal, bus)
    except NotFound:
        raise not_found(f"Event bus {bus} does not exist.") from None
    destinations = await _destination_arns(call)
    having = sorted(
        (r for r in rules if any(_target_arn(call, t, destinations) == arn for t in r.targets)),
        key=lambda r: r.name,
    )
    page, token = paginate(call, having, lambda r: r.name)
    answer: dict[str, Any] = {"RuleNames": [r.name for r in page]}
    if token:
        answer["NextToken"] = token
    return answer


# Targets -------------------------------------------------------------------------------------


class _TargetError(Exception):
    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message


def _target_arn(
    call: Call, target: TargetSpec, destinations: dict[tuple[str, str], str] | None = None
) -> str:
    """The ARN a Stellwerk target is shown by (`_spec` reads it back); `destinations`: the
    tenant's API destinations' ARNs by (endpoint, connection)."""
    if target.type == "http" and target.url and target.connection and destinations:
        found = destinations.get((target.url, target.connection))
        if found is not None:
            return found
    if target.type == "bus" and target.bus and not target.tenant:
        return call.arn(f"event-bus/{target.bus}")
    if target.type == "http" and target.url:
        return target.url
    if target.type == "log":
        return call.arn(f"log-group:{target.id}").replace(":events:", ":logs:", 1)
    return f"stellwerk:{target.type}:{target.id}"


async def _spec(call: Call, given: object, kept: TargetSpec | None) -> TargetSpec:
    """The Stellwerk target of one PutTargets entry."""
    if not isinstance(given, dict):
        raise _TargetError("ValidationException", "A target must be an object.")
    target_id = given.get("Id")
    arn = given.get("Arn")
    if not isinstance(target_id, str) or not target_id:
        raise _TargetError("ValidationException", "Id is a required argument.")
    if not isinstance(arn, str) or not arn:
        raise _TargetError("ValidationException", "Arn is a required argument.")
    fields: dict[str, Any] = {"id": target_id}
    if arn.startswith(("https://", "http://")):
        fields.update(type="http", url=arn)
        if kept is not None and kept.type == "http":
            fields.update(secret=kept.secret)  # the signing secret stays
    elif arn.startswith("arn:aws:events:") and ":api-destination/" in arn:
        name = arn.rpartition(":api-destination/")[2].split("/")[0]
        found = await call.store.destination(call.principal.tenant_id, name)
        if found is None:
            raise _TargetError(
                "ResourceNotFoundException", f"Api destination {name} does not exist."
            )
        fields.update(type="http", url=found.endpoint, connection=found.connection)
        if found.rate is not None:
            fields.update(rate_limit=float(found.rate))
        if kept is not None and kept.type == "http":
            fields.update(secret=kept.secret)
    elif arn.startswith("arn:aws:events:") and ":event-bus/" in arn:
        fields.update(type="bus", bus=arn.rpartition("/")[2])
    elif arn.startswith("arn:aws:logs:"):
        fields.update(type="log")
    else:
        raise _TargetError(
            "ValidationException",
            f"Target {target_id}: {arn!r} is not a target Stellwerk delivers to (an event bus "
            "ARN, a CloudWatch Logs log group ARN or an http(s) URL).",
        )
    parameters = given.get("HttpParameters")
    if parameters is not None:
        if fields["type"] != "http":
            raise _TargetError(
                "ValidationException",
                f"Target {target_id}: HttpParameters apply to API destinations and http(s) "
                "targets only.",
            )
        fields["http_parameters"] = _http_parameters(parameters)
    fields["input_transformer"] = _transformer(given)
    policy = given.get("RetryPolicy")
    if policy is not None:
        attempts = policy.get("MaximumRetryAttempts", 185) if isinstance(policy, dict) else None
        age = policy.get("MaximumEventAgeInSeconds", 86_400) if isinstance(policy, dict) else None
        if not isinstance(attempts, int) or not isinstance(age, int):
            raise _TargetError("ValidationException", "RetryPolicy takes two integers.")
        fields["retry_policy"] = RetryPolicy(
            maximum_retry_attempts=attempts, maximum_event_age_seconds=age
        )
    # As in EventBridge, an event that runs out of retries is dropped unless the target has a
    # dead-letter queue: here, the bus's own dead letters.
    fields["dead_letter"] = bool(given.get("DeadLetterConfig"))
    return TargetSpec(**fields)


# EventBridge's HttpParameters fields and the native `http_parameters` they are kept as.
_HTTP_PARAMETERS: Final = (
    ("PathParameterValues", "path_values"),
    ("HeaderParameters", "headers"),
    ("QueryStringParameters", "query"),
)


def _http_parameters(given: object) -> HttpParameters:
    """Checked as a native rule's are (`validate_rule`): shape here, meaning there."""
    if not isinstance(given, dict) or set(given) - {name for name, _ in _HTTP_PARAMETERS}:
        raise _TargetError(
            "ValidationException",
            "HttpParameters takes PathParameterValues, HeaderParameters and QueryStringParameters.",
        )
    native = {mine: given[theirs] for theirs, mine in _HTTP_PARAMETERS if theirs in given}
    try:
        return msgspec.convert(native, HttpParameters)
    except msgspec.ValidationError as exc:
        raise _TargetError("ValidationException", f"HttpParameters: {exc}") from None


def _transformer(given: dict[str, Any]) -> TransformerSpec | None:
    constant, path, transformer = (
        given.get("Input"),
        given.get("InputPath"),
        given.get("InputTransformer"),
    )
    if sum(v is not None for v in (constant, path, transformer)) > 1:
        raise _TargetError(
            "ValidationException", "Only one of Input, InputPath and InputTransformer may be set."
        )
    if isinstance(constant, str):
        return TransformerSpec(input_template=constant)
    if isinstance(path, str):
        return TransformerSpec(input_path=path)
    if isinstance(transformer, dict):
        template = transformer.get("InputTemplate")
        paths = transformer.get("InputPathsMap")
        if not isinstance(template, str):
            raise _TargetError("ValidationException", "InputTemplate is a required argument.")
        if paths is not None and not (
            isinstance(paths, dict) and all(isinstance(v, str) for v in paths.values())
        ):
            raise _TargetError("ValidationException", "InputPathsMap maps names to paths.")
        return TransformerSpec(input_paths=paths, input_template=template)
    return None


async def retarget(call: Call, old: ApiDestination, new: ApiDestination) -> None:
    """Point the tenant's targets that send to API destination `old` (its endpoint with its
    connection: how a target made from it is known, as `ListTargetsByRule` knows it) at `new`.
    Every changed rule is checked first, so a destination change that one of its targets
    cannot take (a path value too many for the new endpoint) changes nothing."""
    changes: list[tuple[str, Rule, RuleInput]] = []
    for bus in await call.platform.buses.all(call.principal):
        for rule in await call.platform.rules.all(call.principal, bus.name):
            targets = [_retargeted(t, old, new) for t in rule.targets]
            if targets == rule.targets:
                continue
            body = _input(rule, targets=targets)
            try:
                validate_rule(body)
            except ValueError as exc:
                raise validation(
                    f"Rule {rule.name} on EventBus {bus.name} cannot take the change: {exc}"
                ) from None
            changes.append((bus.name, rule, body))
    for bus_name_, rule, body in changes:
        try:
            await _save(call, bus_name_, rule.name, body)
        except ServiceError as exc:
            raise validation(
                f"Rule {rule.name} on EventBus {bus_name_} cannot take the change: {exc.message}"
            ) from None


def _retargeted(target: TargetSpec, old: ApiDestination, new: ApiDestination) -> TargetSpec:
    if target.type != "http" or (target.url, target.connection) != (old.endpoint, old.connection):
        return target
    rate = float(new.rate) if new.rate is not None else None
    return msgspec.structs.replace(
        target, url=new.endpoint, connection=new.connection, rate_limit=rate
    )


async def _destination_arns(call: Call) -> dict[tuple[str, str], str]:
    return {
        (d.endpoint, d.connection): call.arn(f"api-destination/{d.name}")
        for d in await call.store.destinations(call.principal.tenant_id)
    }


def _shown_target(
    call: Call, target: TargetSpec, destinations: dict[tuple[str, str], str]
) -> dict[str, Any]:
    shown: dict[str, Any] = {"Id": target.id, "Arn": _target_arn(call, target, destinations)}
    spec = target.input_transformer
    if spec is not None:
        if spec.input_path is not None:
            shown["InputPath"] = spec.input_path
        elif spec.input_paths is None and spec.input_template is not None:
            shown["Input"] = spec.input_template
        else:
            shown["InputTransformer"] = {
                "InputPathsMap": spec.input_paths or {},
                "InputTemplate": spec.input_template,
            }
    parameters = target.http_parameters
    if parameters is not None:
        shown["HttpParameters"] = {
            theirs: getattr(parameters, mine)
            for theirs, mine in _HTTP_PARAMETERS
            if getattr(parameters, mine)
        }
    shown["RetryPolicy"] = {
        "MaximumRetryAttempts": target.retry_policy.maximum_retry_attempts,
        "MaximumEventAgeInSeconds": target.retry_policy.maximum_event_age_seconds,
    }
    return shown


async def put_targets(call: Call) -> dict[str, Any]:
    bus = _bus(call)
    rule = await _rule(call, bus, call.string("Rule", required=True))
    given = call.params.get("Targets")
    if not isinstance(given, list) or not given:
        raise validation("1 validation error detected: Targets must have at least 1 member")
    if len(given) > MAX_TARGETS_PER_CALL:
        raise validation(
            "1 validation error detected: Value at 'targets' failed to satisfy constraint: "
            f"Member must have length less than or equal to {MAX_TARGETS_PER_CALL}"
        )
    targets = {t.id: t for t in rule.targets}
    failed: list[dict[str, str]] = []
    for entry in given:
        target_id = entry.get("Id", "") if isinstance(entry, dict) else ""
        try:
            spec = await _spec(call, entry, targets.get(str(target_id)))
            _check_alone(rule, spec)
        except _TargetError as exc:
            failed.append(
                {"TargetId": str(target_id), "ErrorCode": exc.code, "ErrorMessage": exc.message}
            )
            continue
        targets[spec.id] = spec
    if len(failed) < len(given):
        try:
            await _save(call, bus, rule.name, _input(rule, targets=list(targets.values())))
        except ServiceError as exc:
            raise validation(exc.message) from None
    return {"FailedEntryCount": len(failed), "FailedEntries": failed}


def _check_alone(rule: Rule, spec: TargetSpec) -> None:
    """What the native rules check of one target, asked alone, so that one bad target fails
    on its own as EventBridge's partial failures do."""
    try:
        validate_rule(RuleInput(pattern=rule.pattern, schedule=rule.schedule, targets=[spec]))
    except ValueError as exc:
        raise _TargetError("ValidationException", str(exc)) from None


async def remove_targets(call: Call) -> dict[str, Any]:
    bus = _bus(call)
    rule = await _rule(call, bus, call.string("Rule", required=True))
    ids = call.params.get("Ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise validation("1 validation error detected: Ids must have at least 1 member")
    present = {t.id for t in rule.targets}
    failed = [
        {
            "TargetId": i,
            "ErrorCode": "ResourceNotFoundException",
            "ErrorMessage": f"Target {i} is not a target of rule {rule.name}.",
        }
        for i in ids
        if i not in present
    ]
    kept = [t for t in rule.targets if t.id not in set(ids)]
    if len(kept) != len(rule.targets):
        try:
            await _save(call, bus, rule.name, _input(rule, targets=kept))
        except InvalidRequest as exc:
            raise validation(exc.message) from None
    return {"FailedEntryCount": len(failed), "FailedEntries": failed}


async def list_targets_by_rule(call: Call) -> dict[str, Any]:
    bus = _bus(call)
    rule = await _rule(call, bus, call.string("Rule", required=True))
    page, token = paginate(call, sorted(rule.targets, key=lambda t: t.id), lambda t: t.id)
    destinations = await _destination_arns(call)
    answer: dict[str, Any] = {"Targets": [_shown_target(call, t, destinations) for t in page]}
    if token:
        answer["NextToken"] = token
    return answer

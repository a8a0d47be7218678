"""EventBridge's connections, API destinations, archives, replays and tags, over the native
connections, archives and replays and this package's own records (docs/eventbridge-api.md)."""

from __future__ import annotations

import contextlib
import dataclasses
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from stellwerk.awsapi.errors import AwsError, not_found, validation
from stellwerk.awsapi.operations import Call, bus_name, paginate
from stellwerk.awsapi.rules_ops import retarget
from stellwerk.awsapi.store import ApiDestination
from stellwerk.clock import utc_now
from stellwerk.patterns import InvalidPatternError, compile_pattern
from stellwerk.service import (
    Archive,
    ArchiveInput,
    Conflict,
    InvalidRequest,
    NotFound,
    Replay,
    ReplayInput,
)

MAX_TAGS: Final = 50
_METHODS: Final = ("POST",)


def _name_of(arn: str, kind: str) -> str:
    """The resource name of an ARN of `kind` (`connection`, `archive`, ...), or the name given."""
    if not arn.startswith("arn:"):
        return arn
    resource = arn.rpartition(":")[2]
    found_kind, _, rest = resource.partition("/")
    if found_kind != kind or not rest:
        raise validation(f"{arn!r} is not the ARN of a {kind}")
    return rest.split("/")[0]


def _ts(moment: datetime) -> float:
    return moment.timestamp()


# Connections ---------------------------------------------------------------------------------

_AUTH_TYPES: Final = ("BASIC", "API_KEY", "OAUTH_CLIENT_CREDENTIALS")


def _connection_spec(call: Call) -> dict[str, Any]:
    kind = call.string("AuthorizationType", required=True)
    params = call.params.get("AuthParameters")
    if kind not in _AUTH_TYPES:
        raise validation(f"AuthorizationType must be one of {', '.join(_AUTH_TYPES)}.")
    if not isinstance(params, dict):
        raise validation("AuthParameters is a required argument.")
    try:
        if kind == "BASIC":
            basic = params["BasicAuthParameters"]
            return {"type": "basic", "username": basic["Username"], "password": basic["Password"]}
        if kind == "API_KEY":
            key = params["ApiKeyAuthParameters"]
            return {"type": "api_key", "header": key["ApiKeyName"], "value": key["ApiKeyValue"]}
        oauth = params["OAuthParameters"]
        client = oauth["ClientParameters"]
        spec: dict[str, Any] = {
            "type": "oauth_client_credentials",
            "token_url": oauth["AuthorizationEndpoint"],
            "client_id": client["ClientID"],
            "client_secret": client["ClientSecret"],
        }
        extra = (oauth.get("OAuthHttpParameters") or {}).get("BodyParameters") or []
        if extra:
            spec["extra_params"] = {p["Key"]: p["Value"] for p in extra}
        return spec
    except (KeyError, TypeError):
        raise validation(f"AuthParameters do not hold what {kind} needs.") from None


def _connection_answer(
    call: Call, name: str, created: datetime, changed: datetime
) -> dict[str, Any]:
    return {
        "ConnectionArn": call.arn(f"connection/{name}"),
        "ConnectionState": "AUTHORIZED",
        "CreationTime": _ts(created),
        "LastModifiedTime": _ts(changed),
    }


async def create_connection(call: Call) -> dict[str, Any]:
    name = call.string("Name", required=True)
    spec = _connection_spec(call)
    with contextlib.suppress(NotFound):
        await call.platform.connections.get(call.principal, name)
        raise AwsError("ResourceAlreadyExistsException", f"Connection {name} already exists.")
    try:
        made, _ = await call.platform.connections.put(call.principal, name, spec)
    except InvalidRequest as exc:
        raise validation(exc.message) from None
    return _connection_answer(call, name, made.created_at, made.updated_at)


async def describe_connection(call: Call) -> dict[str, Any]:
    name = _name_of(call.string("Name", required=True), "connection")
    try:
        found = await call.platform.connections.get(call.principal, name)
    except NotFound:
        raise not_found(f"Connection '{name}' does not exist.") from None
    kinds = {
        "basic": "BASIC",
        "api_key": "API_KEY",
        "api_key_query": "API_KEY",
        "oauth_client_credentials": "OAUTH_CLIENT_CREDENTIALS",
    }
    shown = found.connection
    auth: dict[str, Any] = {}
    if shown["type"] == "basic":
        auth = {"BasicAuthParameters": {"Username": shown["username"]}}
    elif shown["type"] == "api_key":
        auth = {"ApiKeyAuthParameters": {"ApiKeyName": shown["header"]}}
    elif shown["type"] == "api_key_query":
        # EventBridge's way to put a secret in the query: an invocation parameter.
        query = [{"Key": shown["parameter"], "IsValueSecret": True}]
        auth = {"InvocationHttpParameters": {"QueryStringParameters": query}}
    else:
        auth = {
            "OAuthParameters": {
                "ClientParameters": {"ClientID": shown["client_id"]},
                "AuthorizationEndpoint": shown["token_url"],
                "HttpMethod": "POST",
            }
        }
    return {
        "Name": name,
        "AuthorizationType": kinds[shown["type"]],
        "AuthParameters": auth,
        **_connection_answer(call, name, found.created_at, found.updated_at),
    }


async def delete_connection(call: Call) -> dict[str, Any]:
    name = _name_of(call.string("Name", required=True), "connection")
    try:
        found = await call.platform.connections.get(call.principal, name)
        await call.platform.connections.delete(call.principal, name)
    except NotFound:
        raise not_found(f"Connection '{name}' does not exist.") from None
    return _connection_answer(call, name, found.created_at, found.updated_at)


# API destinations ----------------------------------------------------------------------------


def destination_arn(call: Call, name: str) -> str:
    return call.arn(f"api-destination/{name}")


def _destination_answer(call: Call, found: ApiDestination) -> dict[str, Any]:
    return {
        "ApiDestinationArn": destination_arn(call, found.name),
        "ApiDestinationState": "ACTIVE",
        "CreationTime": _ts(found.created_at),
        "LastModifiedTime": _ts(found.updated_at),
    }


async def create_api_destination(call: Call) -> dict[str, Any]:
    name = call.string("Name", required=True)
    connection = _name_of(call.string("ConnectionArn", required=True), "connection")
    endpoint = call.string("InvocationEndpoint", required=True)
    method = call.string("HttpMethod", required=True)
    rate = call.params.get("InvocationRateLimitPerSecond")
    await _check_destination(call, connection, endpoint, method, rate)
    now = utc_now()
    made = ApiDestination(
        name, call.string("Description"), connection, endpoint, method, rate, now, now
    )
    if not await call.store.add_destination(call.principal.tenant_id, made):
        raise AwsError("ResourceAlreadyExistsException", f"Api destination {name} already exists.")
    return _destination_answer(call, made)


async def update_api_destination(call: Call) -> dict[str, Any]:
    """Changes what is given, and the targets that send to the destination with it (as
    EventBridge's targets follow their destination): their endpoint, connection and rate."""
    name = _name_of(call.string("Name", required=True), "api-destination")
    old = await api_destination(call, name)
    given = call.params
    connection = old.connection
    if given.get("ConnectionArn") is not None:
        connection = _name_of(call.string("ConnectionArn"), "connection")
    rate = given.get("InvocationRateLimitPerSecond", old.rate)
    changed = dataclasses.replace(
        old,
        description=call.string("Description", default=old.description),
        connection=connection,
        endpoint=call.string("InvocationEndpoint", default=old.endpoint),
        method=call.string("HttpMethod", default=old.method),
        rate=rate,
        updated_at=utc_now(),
    )
    await _check_destination(call, changed.connection, changed.endpoint, changed.method, rate)
    await retarget(call, old, changed)
    if not await call.store.update_destination(call.principal.tenant_id, changed):
        raise not_found(f"Api destination '{name}' does not exist.")
    return _destination_answer(call, changed)


async def _check_destination(
    call: Call, connection: str, endpoint: str, method: str, rate: object
) -> None:
    if method not in _METHODS:
        raise validation(f"HttpMethod {method} is not supported here: Stellwerk sends POST.")
    if rate is not None and (not isinstance(rate, int) or isinstance(rate, bool) or rate < 1):
        raise validation("InvocationRateLimitPerSecond must be a positive integer.")
    if not endpoint.startswith(("https://", "http://")) or len(endpoint) > 2048:
        raise validation("InvocationEndpoint must be an http(s) URL of at most 2048 characters.")
    try:
        await call.platform.connections.get(call.principal, connection)
    except NotFound:
        raise not_found(f"Connection '{connection}' does not exist.") from None


async def api_destination(call: Call, name: str) -> ApiDestination:
    found = await call.store.destination(call.principal.tenant_id, name)
    if found is None:
        raise not_found(f"Api destination '{name}' does not exist.")
    return found


def _described_destination(call: Call, found: ApiDestination) -> dict[str, Any]:
    return {
        "Name": found.name,
        **({"Description": found.description} if found.description else {}),
        "ConnectionArn": call.arn(f"connection/{found.connection}"),
        "InvocationEndpoint": found.endpoint,
        "HttpMethod": found.method,
        **({"InvocationRateLimitPerSecond": found.rate} if found.rate is not None else {}),
        **_destination_answer(call, found),
    }


async def describe_api_destination(call: Call) -> dict[str, Any]:
    name = _name_of(call.string("Name", required=True), "api-destination")
    return _described_destination(call, await api_destination(call, name))


async def list_api_destinations(call: Call) -> dict[str, Any]:
    prefix = call.string("NamePrefix")
    connection = call.string("ConnectionArn")
    found = [
        d
        for d in await call.store.destinations(call.principal.tenant_id)
        if d.name.startswith(prefix)
        and (not connection or d.connection == _name_of(connection, "connection"))
    ]
    page, token = paginate(call, found, lambda d: d.name)
    answer: dict[str, Any] = {"ApiDestinations": [_described_destination(call, d) for d in page]}
    if token:
        answer["NextToken"] = token
    return answer


async def delete_api_destination(call: Call) -> dict[str, Any]:
    name = _name_of(call.string("Name", required=True), "api-destination")
    if not await call.store.delete_destination(call.principal.tenant_id, name):
        raise not_found(f"Api destination '{name}' does not exist.")
    return {}


# Archives ------------------------------------------------------------------------------------

_ARCHIVE_STATES: Final = {"enabled": "ENABLED", "catching_up": "ENABLED", "creating": "CREATING"}


async def _archives(call: Call) -> list[Archive]:
    found: list[Archive] = []
    for bus in await call.platform.buses.all(call.principal):
        found += await call.platform.archives.all(call.principal, bus.name)
    return found


async def _archive(call: Call, name: str) -> Archive:
    for archive in await _archives(call):
        if archive.name == name:
            return archive
    raise not_found(f"Archive {name} does not exist.")


def _archive_answer(call: Call, archive: Archive) -> dict[str, Any]:
    return {
        "ArchiveArn": call.arn(f"archive/{archive.name}"),
        "ArchiveName": archive.name,
        "EventSourceArn": call.arn(f"event-bus/{archive.bus}"),
        **({"Description": archive.description} if archive.description else {}),
        **(
            {"EventPattern": msgspec.json.encode(archive.pattern).decode()}
            if archive.pattern is not None
            else {}
        ),
        "State": _ARCHIVE_STATES.get(archive.state, "ENABLED"),
        "RetentionDays": archive.retention_days,
        "SizeBytes": archive.size_bytes,
        "EventCount": archive.events,
        "CreationTime": _ts(archive.created_at),
    }


async def create_archive(call: Call) -> dict[str, Any]:
    name = call.string("ArchiveName", required=True)
    bus = bus_name(call.string("EventSourceArn", required=True))
    text = call.string("EventPattern")
    pattern = None
    if text:
        try:
            pattern = compile_pattern(text).source
        except InvalidPatternError as exc:
            raise AwsError(
                "InvalidEventPatternException", f"Event pattern is not valid. Reason: {exc}"
            ) from None
    retention = call.params.get("RetentionDays", 0)
    if not isinstance(retention, int) or isinstance(retention, bool) or retention < 0:
        raise validation("RetentionDays must be a whole number of days, 0 for ever.")
    if any(a.name == name for a in await _archives(call)):
        raise AwsError("ResourceAlreadyExistsException", f"Archive {name} already exists.")
    body = ArchiveInput(
        pattern=pattern, retention_days=retention, description=call.string("Description")
    )
    try:
        made, _ = await call.platform.archives.put(call.principal, bus, name, body)
    except NotFound:
        raise not_found(f"Event bus {bus} does not exist.") from None
    answer = _archive_answer(call, made)
    return {k: answer[k] for k in ("ArchiveArn", "State", "CreationTime")}


async def describe_archive(call: Call) -> dict[str, Any]:
    return _archive_answer(call, await _archive(call, call.string("ArchiveName", required=True)))


async def list_archives(call: Call) -> dict[str, Any]:
    prefix = call.string("NamePrefix")
    source = call.string("EventSourceArn")
    found = sorted(
        (
            a
            for a in await _archives(call)
            if a.name.startswith(prefix) and (not source or a.bus == bus_name(source))
        ),
        key=lambda a: a.name,
    )
    page, token = paginate(call, found, lambda a: a.name)
    answer: dict[str, Any] = {"Archives": [_archive_answer(call, a) for a in page]}
    if token:
        answer["NextToken"] = token
    return answer


async def delete_archive(call: Call) -> dict[str, Any]:
    archive = await _archive(call, call.string("ArchiveName", required=True))
    await call.platform.archives.delete(call.principal, archive.bus, archive.name)
    return {}


# Replays -------------------------------------------------------------------------------------

_REPLAY_STATES: Final = {
    "queued": "STARTING",
    "running": "RUNNING",
    "completed": "COMPLETED",
    "cancelled": "CANCELLED",
    "failed": "FAILED",
}


def _when(value: object, name: str) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, str) and value:
        return value
    raise validation(f"{name} is a required argument.")


def _replay_answer(call: Call, replay: Replay) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "ReplayName": replay.name,
        "ReplayArn": call.arn(f"replay/{replay.name}"),
        "State": _REPLAY_STATES.get(replay.state, "RUNNING"),
        "EventSourceArn": call.arn(f"archive/{replay.archive}"),
        "Destination": {"Arn": call.arn(f"event-bus/{replay.bus}")},
        "EventStartTime": _ts(replay.start),
        "EventEndTime": _ts(replay.end),
        "ReplayStartTime": _ts(replay.created_at),
    }
    if replay.rules is not None:
        answer["Destination"]["FilterArns"] = [
            call.arn(f"rule/{replay.bus}/{rule}") for rule in replay.rules
        ]
    if replay.description:
        answer["Description"] = replay.description
    if replay.error:
        answer["StateReason"] = replay.error
    if replay.finished_at is not None:
        answer["ReplayEndTime"] = _ts(replay.finished_at)
    return answer


async def start_replay(call: Call) -> dict[str, Any]:
    name = call.string("ReplayName", required=True)
    archive = await _archive(
        call, _name_of(call.string("EventSourceArn", required=True), "archive")
    )
    destination = call.params.get("Destination")
    if not isinstance(destination, dict) or not isinstance(destination.get("Arn"), str):
        raise validation("Destination.Arn is a required argument.")
    bus = bus_name(destination["Arn"])
    if bus != archive.bus:
        raise validation("Destination.Arn must be the event bus the archive was made from.")
    filters = destination.get("FilterArns")
    rules = None
    if filters:
        if not isinstance(filters, list) or not all(isinstance(f, str) for f in filters):
            raise validation("Destination.FilterArns is a list of rule ARNs.")
        rules = [f.rpartition("/")[2] for f in filters]
    body = ReplayInput(
        name=name,
        archive=archive.name,
        bus=bus,
        start=_when(call.params.get("EventStartTime"), "EventStartTime"),
        end=_when(call.params.get("EventEndTime"), "EventEndTime"),
        rules=rules,
        description=call.string("Description"),
    )
    try:
        replay = await call.platform.replays.start(call.principal, body)
    except Conflict as exc:
        code = "ResourceAlreadyExistsException" if exc.code == "ResourceAlreadyExists" else None
        raise AwsError(code or "LimitExceededException", exc.message) from None
    except InvalidRequest as exc:
        raise validation(exc.message) from None
    answer = _replay_answer(call, replay)
    return {k: answer[k] for k in ("ReplayArn", "State", "ReplayStartTime") if k in answer}


async def describe_replay(call: Call) -> dict[str, Any]:
    name = call.string("ReplayName", required=True)
    try:
        replay = await call.platform.replays.get(call.principal, name)
    except NotFound:
        raise not_found(f"Replay {name} does not exist.") from None
    return _replay_answer(call, replay)


async def cancel_replay(call: Call) -> dict[str, Any]:
    name = call.string("ReplayName", required=True)
    try:
        replay = await call.platform.replays.cancel(call.principal, name)
    except NotFound:
        raise not_found(f"Replay {name} does not exist.") from None
    except Conflict as exc:
        raise AwsError("IllegalStatusException", exc.message) from None
    answer = _replay_answer(call, replay)
    state = "CANCELLING" if answer["State"] in ("STARTING", "RUNNING") else answer["State"]
    return {"ReplayArn": answer["ReplayArn"], "State": state}


# Tags ----------------------------------------------------------------------------------------


async def _tagged(call: Call) -> str:
    """The `ResourceARN` of the call, once it names a resource of the caller that exists."""
    arn = call.string("ResourceARN", required=True)
    prefix = call.arn("")
    if not arn.startswith(prefix):
        raise not_found(f"Resource {arn} does not exist.")
    resource = arn[len(prefix) :]
    kind, _, name = resource.partition("/")
    try:
        if kind == "event-bus":
            await call.platform.buses.get(call.principal, name)
        elif kind == "rule":
            bus, _, rule = name.rpartition("/")
            await call.platform.rules.get(call.principal, bus or "default", rule)
        elif kind == "connection":
            await call.platform.connections.get(call.principal, name)
        elif kind == "api-destination":
            await api_destination(call, name)
        elif kind == "archive":
            await _archive(call, name)
        else:
            raise not_found(f"Resource {arn} does not exist.")
    except NotFound:
        raise not_found(f"Resource {arn} does not exist.") from None
    return arn


def _tag_list(value: object) -> dict[str, str]:
    if not isinstance(value, list):
        raise validation("Tags is a required argument.")
    found: dict[str, str] = {}
    for tag in value:
        if not (
            isinstance(tag, dict)
            and isinstance(tag.get("Key"), str)
            and isinstance(tag.get("Value"), str)
            and 1 <= len(tag["Key"]) <= 128
            and len(tag["Value"]) <= 256
        ):
            raise validation("A tag is a Key of 1-128 characters and a Value of up to 256.")
        found[tag["Key"]] = tag["Value"]
    return found


async def tag_resource(call: Call) -> dict[str, Any]:
    arn = await _tagged(call)
    given = _tag_list(call.params.get("Tags"))
    present = await call.store.tags(call.principal.tenant_id, arn)
    if len(present | given) > MAX_TAGS:
        raise AwsError("LimitExceededException", f"A resource has at most {MAX_TAGS} tags.")
    await call.store.tag(call.principal.tenant_id, arn, given)
    return {}


async def untag_resource(call: Call) -> dict[str, Any]:
    arn = await _tagged(call)
    keys = call.params.get("TagKeys")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise validation("TagKeys is a required argument.")
    await call.store.untag(call.principal.tenant_id, arn, keys)
    return {}


async def list_tags_for_resource(call: Call) -> dict[str, Any]:
    arn = await _tagged(call)
    found = await call.store.tags(call.principal.tenant_id, arn)
    return {"Tags": [{"Key": k, "Value": v} for k, v in found.items()]}

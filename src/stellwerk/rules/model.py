"""The rule a user saves, checked whole at save time so nothing is found wrong when events flow.

A rule is an EventBridge pattern on one bus, a state, and up to 10 targets. Each target has an
id unique in the rule, a type with its own fields, an optional input transformer, a retry policy
and a dead-letter switch. Checks that need I/O (does the connection exist, may this URL be
reached) are the caller's: `validate_rule` covers everything that can be decided from the text.
"""

from __future__ import annotations

import functools
import re
from datetime import datetime
from typing import Annotated, Any, Final, Literal, get_args
from urllib.parse import quote

import msgspec
from yarl import URL

from stellwerk.names import NAME_RULE
from stellwerk.patterns import CompiledPattern, InvalidPatternError, PatternObject, compile_pattern
from stellwerk.rules.connections import HEADER_NAME_PATTERN, RESERVED_HEADERS, HeaderName
from stellwerk.rules.schedule import InvalidScheduleError, parse_schedule
from stellwerk.transform import (
    InputTransformer,
    InvalidTransformerError,
    is_missing,
    parse_path,
    resolve,
)

MAX_TARGETS: Final = 10
MAX_TIMEOUT_SECONDS: Final = 300.0
_NAME: Final = re.compile(rf"^{NAME_RULE}\Z")
_FUNCTION: Final = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*\Z")

MAX_RETRY_ATTEMPTS: Final = 185
MIN_EVENT_AGE_SECONDS: Final = 60
MAX_EVENT_AGE_SECONDS: Final = 86_400


class RetryPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """EventBridge's retry policy: retries after the first attempt, and the oldest event to try.

    `maximum_retry_attempts` is 0..185 (0: one attempt only); `maximum_event_age_seconds` is
    60..86,400, counted from the event's recorded time.
    """

    maximum_retry_attempts: int = MAX_RETRY_ATTEMPTS
    maximum_event_age_seconds: int = MAX_EVENT_AGE_SECONDS


# The core's own target types; a capability brings more (`stellwerk.delivery.TargetKinds`,
# such as `status`), named like these and configured through `parameters`.
BUILTIN_TARGET_TYPES: Final = ("http", "bus", "function", "log")
TargetType = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]


class InvalidRuleError(ValueError):
    """The rule cannot be saved; `error` is the API error code, `field` where the problem is."""

    def __init__(self, message: str, field: str | None = None, error: str = "InvalidRule") -> None:
        super().__init__(message)
        self.field = field
        self.error = error


class TransformerSpec(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """EventBridge's InputTransformer: `input_path`, or `input_paths` with an `input_template`."""

    input_paths: dict[str, str] | None = None
    input_template: str | None = None
    input_path: str | None = None


MAX_HTTP_PARAMETERS: Final = 50
JSON_PATH_PREFIX: Final = "$."
# A value: 1-512 characters, no line break or other control character. One that starts with
# `$.` is a JSON path into the event (as EventBridge reads it), looked up at each delivery.
_VALUE = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=512,
        pattern=r"^[^\x00-\x08\x0a-\x1f\x7f]+$",
        description="sent as it is, or, starting with `$.`, a JSON path into the event",
    ),
]
# A query key: sent as it is (a key is never a path).
_FIXED = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=512,
        pattern=r"^[^\x00-\x08\x0a-\x1f\x7f]+$",
        extra_json_schema={"not": {"pattern": r"^\$\."}},
    ),
]
_HEADER_NAME: Final = re.compile(HEADER_NAME_PATTERN)


def is_json_path(value: str) -> bool:
    """Whether an `http_parameters` value is a JSON path into the event (`$.detail.id`)."""
    return value.startswith(JSON_PATH_PREFIX)


class HttpParameters(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """EventBridge's `HttpParameters` of an `http` target: `path_values` fill the `*` wildcards
    of the URL's path in order (one value each), `query` is added to the URL's query and
    `headers` to every request (the target's own headers and its connection's authorization
    win over them). A value starting with `$.` is a JSON path into the event, looked up at each
    delivery (`stellwerk.delivery.targets.http`)."""

    path_values: Annotated[list[_VALUE], msgspec.Meta(max_length=MAX_HTTP_PARAMETERS)] = (
        msgspec.field(default_factory=list)
    )
    headers: Annotated[dict[HeaderName, _VALUE], msgspec.Meta(max_length=MAX_HTTP_PARAMETERS)] = (
        msgspec.field(default_factory=dict)
    )
    query: Annotated[dict[_FIXED, _VALUE], msgspec.Meta(max_length=MAX_HTTP_PARAMETERS)] = (
        msgspec.field(default_factory=dict)
    )

    @property
    def json_paths(self) -> bool:
        """Whether a value is a JSON path (so the URL and headers differ per event)."""
        values = [*self.path_values, *self.headers.values(), *self.query.values()]
        return any(is_json_path(value) for value in values)


def http_url(url: str, parameters: HttpParameters | None) -> str:
    """`url` with its path's `*` wildcards filled and its query extended by `parameters`."""
    if parameters is None or not (parameters.path_values or parameters.query):
        return url
    parsed = URL(url)
    path = parsed.raw_path
    for value in parameters.path_values:
        path = path.replace("*", quote(value, safe=""), 1)
    # `with_path` drops the query: the URL's own comes back first, then the parameters'.
    filled = parsed.with_path(path, encoded=True).with_query(parsed.query)
    return str(filled.extend_query(parameters.query))


class UnresolvedParameter(ValueError):
    """A JSON-path value of `http_parameters` that the event cannot give (see
    `resolve_http_parameters`)."""


_HEADER_VALUE: Final = re.compile(r"[^\x00-\x08\x0a-\x1f\x7f]*")


@functools.lru_cache(maxsize=1024)
def _path_steps(path: str) -> tuple[str | int, ...]:
    return parse_path(path, "http_parameters")


def _looked_up(path: str, event: object) -> str | None:
    """What JSON path `path` finds in `event`: a string as it is, another JSON value as its
    JSON text; None for nothing (or null)."""
    found = resolve(event, _path_steps(path))
    if is_missing(found) or found is None:
        return None
    return found if isinstance(found, str) else msgspec.json.encode(found).decode()


def resolve_http_parameters(parameters: HttpParameters, event: object) -> HttpParameters:
    """`parameters` with each JSON-path value replaced by what it finds in `event` (the event as
    the target receives it, decoded). A header or query parameter whose path finds nothing (or
    null) is left out; a path value that finds nothing, or a header value with a line break or
    another control character, raises `UnresolvedParameter`: the request cannot be made."""
    path_values = []
    for value in parameters.path_values:
        if is_json_path(value):
            found = _looked_up(value, event)
            if found is None or found == "":
                raise UnresolvedParameter(f"path value {value}: the event has no value there")
            value = found
        path_values.append(value)
    headers = {}
    for name, value in parameters.headers.items():
        if is_json_path(value):
            found = _looked_up(value, event)
            if found is None:
                continue
            if not _HEADER_VALUE.fullmatch(found):
                raise UnresolvedParameter(
                    f"header {name} ({value}): the event's value holds a line break or another "
                    "control character"
                )
            value = found
        headers[name] = value
    query = {}
    for key, value in parameters.query.items():
        if is_json_path(value):
            found = _looked_up(value, event)
            if found is None:
                continue
            value = found
        query[key] = value
    return HttpParameters(path_values=path_values, headers=headers, query=query)


class TargetSpec(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """One target of a rule. Which fields apply depends on `type`:

    - `http`: `url`, optional `connection` (by name), `secret` (Standard Webhooks, `whsec_...`;
      generated when the target is new and kept when a save omits it, see `rules.signing`),
      `timeout_seconds`, `concurrency`, `rate_limit` (invocations/s), `http_parameters`
      (EventBridge's path, header and query values, `HttpParameters`). After a rotation,
      `previous_secret` signs too until `previous_secret_expires_at`; both are the server's to
      set (a save may repeat them unchanged).
    - `bus`: `bus`, and `tenant` for a bus of another tenant that granted it to this one.
    - `function`: `function` as `module:callable`, `concurrency`.
    - `log`: nothing more.
    - a type a capability brings (`status`): its settings in `parameters`, checked by the
      capability when the rule is saved.

    `ordered`: deliver events with the same `ordering_key` attribute (`partitionkey` extension or
    `subject`) one at a time, in log order.
    """

    id: str
    type: TargetType
    url: str | None = None
    connection: str | None = None
    secret: str | None = None
    previous_secret: str | None = None
    previous_secret_expires_at: datetime | None = None
    bus: str | None = None
    tenant: str | None = None
    function: str | None = None
    parameters: dict[str, Any] | None = None
    input_transformer: TransformerSpec | None = None
    retry_policy: RetryPolicy = msgspec.field(default_factory=RetryPolicy)
    dead_letter: bool = True
    timeout_seconds: float = 5.0
    concurrency: int = 20
    rate_limit: float | None = None
    http_parameters: HttpParameters | None = None
    ordered: bool = False
    ordering_key: Literal["partitionkey", "subject"] = "partitionkey"


# How a rule sees events: as the CloudEvents they are stored as, or in EventBridge's envelope
# (`version`, `id`, `detail-type`, `source`, `account`, `time`, `region`, `resources`, `detail`;
# `stellwerk.events.envelope`), its pattern matched against that and its targets sent that.
View = Literal["cloudevents", "eventbridge"]

# Where a rule routes when its bus is in a global endpoint (docs/global-endpoints.md): on the
# endpoint's active site only (each event delivered once), or on every site that stores the
# event, standing by or not (for regional consumers: each site delivers it once).
RuleSites = Literal["active", "all"]


class RuleInput(msgspec.Struct, forbid_unknown_fields=True):
    """The body of `PUT /v1/buses/{bus}/rules/{rule}`: a `pattern`, or a `schedule` (`rate(...)`
    or `cron(...)`, `stellwerk.rules.schedule`) whose ticks send a Scheduled Event to the
    rule's targets alone."""

    pattern: PatternObject | None = None
    targets: list[TargetSpec] = msgspec.field(default_factory=list)
    state: Literal["enabled", "disabled"] = "enabled"
    description: str = ""
    view: View = "cloudevents"
    schedule: str | None = None
    # `RuleSites`; checked by `validate_rule`, so that a bad value is a 400 naming the field.
    sites: str = "active"


class Rule(msgspec.Struct, omit_defaults=True):
    """A saved rule, as the API shows it (secrets shown to admin keys only)."""

    name: str
    bus: str
    pattern: dict[str, Any] | None
    state: Literal["enabled", "disabled"]
    targets: list[TargetSpec]
    created_at: datetime
    updated_at: datetime
    description: str = ""
    view: View = "cloudevents"
    schedule: str | None = None
    sites: RuleSites = "active"


def _fail(message: str, field: str) -> InvalidRuleError:
    return InvalidRuleError(message, field)


def _check_target(index: int, target: TargetSpec) -> None:
    where = f"targets[{index}]"
    if not _NAME.match(target.id):
        raise _fail(f"target id {target.id!r} must match {NAME_RULE}", f"{where}.id")
    required = {"http": "url", "bus": "bus", "function": "function"}.get(target.type)
    fields_by_type = {
        "url": "http",
        "connection": "http",
        "secret": "http",
        "previous_secret": "http",
        "previous_secret_expires_at": "http",
        "rate_limit": "http",
        "http_parameters": "http",
        "bus": "bus",
        "tenant": "bus",
        "function": "function",
    }
    for name, owner in fields_by_type.items():
        if getattr(target, name) is not None and owner != target.type:
            raise _fail(f"{name} does not apply to a {target.type} target", f"{where}.{name}")
    if target.type in BUILTIN_TARGET_TYPES and target.parameters is not None:
        raise _fail(f"parameters does not apply to a {target.type} target", f"{where}.parameters")
    if required is not None and getattr(target, required) is None:
        raise _fail(f"a {target.type} target needs {required}", f"{where}.{required}")
    if target.bus is not None and not _NAME.match(target.bus):
        raise _fail(f"bus name {target.bus!r} must match {NAME_RULE}", f"{where}.bus")
    if target.function is not None and not _FUNCTION.match(target.function):
        raise _fail("function must be 'module:callable'", f"{where}.function")
    if target.secret is not None and not target.secret.startswith("whsec_"):
        raise _fail("secret must be a Standard Webhooks secret (whsec_...)", f"{where}.secret")
    policy = target.retry_policy
    if not 0 <= policy.maximum_retry_attempts <= MAX_RETRY_ATTEMPTS:
        raise _fail(
            f"maximum_retry_attempts must be 0..{MAX_RETRY_ATTEMPTS}",
            f"{where}.retry_policy.maximum_retry_attempts",
        )
    if not MIN_EVENT_AGE_SECONDS <= policy.maximum_event_age_seconds <= MAX_EVENT_AGE_SECONDS:
        raise _fail(
            f"maximum_event_age_seconds must be {MIN_EVENT_AGE_SECONDS}..{MAX_EVENT_AGE_SECONDS}",
            f"{where}.retry_policy.maximum_event_age_seconds",
        )
    if not 0.1 <= target.timeout_seconds <= MAX_TIMEOUT_SECONDS:
        raise _fail(
            f"timeout_seconds must be 0.1..{MAX_TIMEOUT_SECONDS:g}", f"{where}.timeout_seconds"
        )
    if not 1 <= target.concurrency <= 1000:
        raise _fail("concurrency must be 1..1000", f"{where}.concurrency")
    if target.rate_limit is not None and not 0 < target.rate_limit <= 100_000:
        raise _fail("rate_limit must be in (0, 100000] invocations/s", f"{where}.rate_limit")
    if target.http_parameters is not None and target.url is not None:
        _check_http_parameters(
            target.url,
            target.http_parameters,
            f"{where}.http_parameters",
            transformed=target.input_transformer is not None,
        )
    if target.input_transformer is not None:
        try:
            compile_transformer(target.input_transformer)
        except InvalidTransformerError as exc:
            field = f"{where}.input_transformer" + (f".{exc.field}" if exc.field else "")
            raise InvalidRuleError(str(exc), field, "InvalidInputTransformer") from None


def _check_http_parameters(
    url: str, parameters: HttpParameters, where: str, *, transformed: bool
) -> None:
    wildcards = URL(url).raw_path.count("*")
    if len(parameters.path_values) != wildcards:
        raise _fail(
            f"path_values has {len(parameters.path_values)} values for the {wildcards} '*' "
            "wildcards of the URL's path: give one value for each",
            f"{where}.path_values",
        )
    for name in parameters.headers:
        if not _HEADER_NAME.match(name):
            raise _fail(f"header name {name!r} is not an HTTP token", f"{where}.headers")
        if name.lower() in RESERVED_HEADERS:
            raise _fail(f"header {name!r} is the target's own", f"{where}.headers")
    if any(is_json_path(key) for key in parameters.query):
        raise _fail("a query key is sent as it is: it cannot start with '$.'", f"{where}.query")
    for part, values in (
        ("path_values", parameters.path_values),
        ("headers", list(parameters.headers.values())),
        ("query", list(parameters.query.values())),
    ):
        for value in values:
            if not is_json_path(value):
                continue
            if transformed:
                raise _fail(
                    f"JSON-path value {value!r}: a target with an input transformer (Input, "
                    "InputPath, InputTransformer) takes fixed values only",
                    f"{where}.{part}",
                )
            try:
                parse_path(value, f"{where}.{part}")
            except InvalidTransformerError:
                raise _fail(
                    f"{value!r} is not a JSON path (like $.detail.id, $.detail.items[0] or "
                    "$.detail['a b'])",
                    f"{where}.{part}",
                ) from None


def compile_transformer(spec: TransformerSpec) -> InputTransformer:
    return InputTransformer(spec.input_paths, spec.input_template, spec.input_path)


def validate_rule(body: RuleInput) -> CompiledPattern | None:
    """Check everything about the rule that needs no I/O; returns the compiled pattern (None
    for a scheduled rule)."""
    compiled = None
    if (body.pattern is None) == (body.schedule is None):
        raise _fail("a rule has a pattern or a schedule, not both or neither", "pattern")
    if body.schedule is not None:
        try:
            parse_schedule(body.schedule)
        except InvalidScheduleError as exc:
            raise InvalidRuleError(str(exc), "schedule", "InvalidScheduleExpression") from None
    else:
        assert body.pattern is not None
        try:
            compiled = compile_pattern(body.pattern)
        except InvalidPatternError as exc:
            raise InvalidRuleError(str(exc), "pattern", "InvalidEventPatternException") from None
    if len(body.targets) > MAX_TARGETS:
        raise _fail(f"a rule has at most {MAX_TARGETS} targets", "targets")
    seen: set[str] = set()
    for index, target in enumerate(body.targets):
        _check_target(index, target)
        if target.id in seen:
            raise _fail(f"target id {target.id!r} is used twice", f"targets[{index}].id")
        seen.add(target.id)
    if len(body.description) > 512:
        raise _fail("description is longer than 512 characters", "description")
    if body.sites not in get_args(RuleSites):
        raise _fail(f"sites must be 'active' or 'all', not {body.sites!r}", "sites")
    if body.sites == "all" and body.schedule is not None:
        # Each site ticks its own scheduled rules already; a tick is not routed elsewhere.
        raise _fail("sites 'all' applies to rules with a pattern, not a schedule", "sites")
    return compiled

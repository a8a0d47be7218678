"""The rule a user saves, checked whole at save time so nothing is found wrong when events flow.

A rule is an EventBridge pattern on one bus, a state, and up to 10 targets. Each target has an
id unique in the rule, a type with its own fields, an optional input transformer, a retry policy
and a dead-letter switch. Checks that need I/O (does the connection exist, may this URL be
reached) are the caller's: `validate_rule` covers everything that can be decided from the text.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Final, Literal

import msgspec

from stellwerk.names import NAME_RULE
from stellwerk.patterns import CompiledPattern, InvalidPatternError, compile_pattern
from stellwerk.transform import InputTransformer, InvalidTransformerError

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


TargetType = Literal["http", "bus", "function", "log"]


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


class TargetSpec(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """One target of a rule. Which fields apply depends on `type`:

    - `http`: `url`, optional `connection` (by name), `secret` (Standard Webhooks, `whsec_...`;
      generated when the target is new and kept when a save omits it, see `rules.signing`),
      `timeout_seconds`, `concurrency`, `rate_limit` (invocations/s). After a rotation,
      `previous_secret` signs too until `previous_secret_expires_at`; both are the server's to
      set (a save may repeat them unchanged).
    - `bus`: `bus`, and `tenant` for a bus of another tenant that granted it to this one.
    - `function`: `function` as `module:callable`, `concurrency`.
    - `log`: nothing more.

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
    input_transformer: TransformerSpec | None = None
    retry_policy: RetryPolicy = msgspec.field(default_factory=RetryPolicy)
    dead_letter: bool = True
    timeout_seconds: float = 5.0
    concurrency: int = 20
    rate_limit: float | None = None
    ordered: bool = False
    ordering_key: Literal["partitionkey", "subject"] = "partitionkey"


class RuleInput(msgspec.Struct, forbid_unknown_fields=True):
    """The body of `PUT /v1/buses/{bus}/rules/{rule}`."""

    pattern: dict[str, Any]
    targets: list[TargetSpec] = msgspec.field(default_factory=list)
    state: Literal["enabled", "disabled"] = "enabled"
    description: str = ""


class Rule(msgspec.Struct, omit_defaults=True):
    """A saved rule, as the API shows it (secrets shown to admin keys only)."""

    name: str
    bus: str
    pattern: dict[str, Any]
    state: Literal["enabled", "disabled"]
    targets: list[TargetSpec]
    created_at: datetime
    updated_at: datetime
    description: str = ""


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
        "bus": "bus",
        "tenant": "bus",
        "function": "function",
    }
    for name, owner in fields_by_type.items():
        if getattr(target, name) is not None and owner != target.type:
            raise _fail(f"{name} does not apply to a {target.type} target", f"{where}.{name}")
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
    if target.input_transformer is not None:
        try:
            compile_transformer(target.input_transformer)
        except InvalidTransformerError as exc:
            field = f"{where}.input_transformer" + (f".{exc.field}" if exc.field else "")
            raise InvalidRuleError(str(exc), field, "InvalidInputTransformer") from None


def compile_transformer(spec: TransformerSpec) -> InputTransformer:
    return InputTransformer(spec.input_paths, spec.input_template, spec.input_path)


def validate_rule(body: RuleInput) -> CompiledPattern:
    """Check everything about the rule that needs no I/O; returns the compiled pattern."""
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
    return compiled

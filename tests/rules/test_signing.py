"""What a rule save keeps of its targets' signing secrets, and what a rotation changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from stellwerk.rules import (
    MAX_SECRET_GRACE,
    InvalidRuleError,
    Rule,
    RuleInput,
    TargetSpec,
    carry_secrets,
    rotated_target,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
OLD = "whsec_" + "A" * 44
NEW = "whsec_" + "B" * 44


def hook(**fields: object) -> TargetSpec:
    return TargetSpec(id="hook", type="http", url="https://example.com/h", **fields)  # type: ignore[arg-type]


def stored(*targets: TargetSpec) -> Rule:
    return Rule(
        name="r",
        bus="default",
        pattern={},
        state="enabled",
        targets=list(targets),
        created_at=NOW,
        updated_at=NOW,
    )


def saved(body_targets: list[TargetSpec], before: Rule | None, now: datetime = NOW) -> TargetSpec:
    return carry_secrets(RuleInput(pattern={}, targets=body_targets), before, now).targets[0]


def test_a_save_without_secret_keeps_the_stored_one() -> None:
    assert saved([hook()], stored(hook(secret=OLD))).secret == OLD


def test_a_new_target_gets_none_for_the_caller_to_generate() -> None:
    assert saved([hook()], None).secret is None
    # Another target id, or a target that was not http before, is new too.
    assert saved([hook()], stored(TargetSpec(id="other", type="http", secret=OLD))).secret is None
    assert saved([hook()], stored(TargetSpec(id="hook", type="log"))).secret is None


def test_a_save_naming_another_secret_replaces_it_at_once() -> None:
    rotated = hook(secret=OLD, previous_secret=NEW, previous_secret_expires_at=NOW + timedelta(1))
    target = saved([hook(secret=NEW)], stored(rotated))
    assert (target.secret, target.previous_secret) == (NEW, None)


def test_a_rotation_in_its_grace_period_survives_a_save_and_ends_when_it_expires() -> None:
    until = NOW + timedelta(hours=1)
    rotated = stored(hook(secret=NEW, previous_secret=OLD, previous_secret_expires_at=until))
    for body in (hook(), hook(secret=NEW)):
        kept = saved([body], rotated)
        assert (kept.secret, kept.previous_secret, kept.previous_secret_expires_at) == (
            NEW,
            OLD,
            until,
        )
    later = saved([hook()], rotated, now=until)
    assert (later.secret, later.previous_secret, later.previous_secret_expires_at) == (
        NEW,
        None,
        None,
    )
    # A body that repeats what GET showed is the same save.
    repeated = hook(previous_secret=OLD, previous_secret_expires_at=until)
    assert saved([repeated], rotated).previous_secret == OLD


def test_previous_secret_is_the_servers_to_set() -> None:
    until = NOW + timedelta(hours=1)
    rotated = stored(hook(secret=NEW, previous_secret=OLD, previous_secret_expires_at=until))
    for body, field in [
        (hook(previous_secret=NEW, previous_secret_expires_at=until), "previous_secret"),
        (hook(previous_secret_expires_at=until + timedelta(1)), "previous_secret_expires_at"),
    ]:
        with pytest.raises(InvalidRuleError) as caught:
            saved([body], rotated)
        assert caught.value.field == f"targets[0].{field}"
    with pytest.raises(InvalidRuleError):
        saved([hook(previous_secret=OLD, previous_secret_expires_at=until)], None)


def test_a_rotation_keeps_the_current_secret_signing_for_the_grace_period() -> None:
    target = rotated_target(hook(secret=OLD), NEW, timedelta(hours=2), NOW)
    assert (target.secret, target.previous_secret) == (NEW, OLD)
    assert target.previous_secret_expires_at == NOW + timedelta(hours=2)
    # Without grace the old one stops at once; rotating again drops the one before.
    assert rotated_target(hook(secret=OLD), NEW, timedelta(0), NOW).previous_secret is None
    third = "whsec_" + "C" * 44
    again = rotated_target(target, third, timedelta(hours=1), NOW)
    assert (again.secret, again.previous_secret) == (third, NEW)


@pytest.mark.parametrize(
    ("target", "secret", "grace", "error"),
    [
        (TargetSpec(id="t", type="log"), NEW, timedelta(0), "InvalidTarget"),
        (hook(secret=OLD), OLD, timedelta(0), "InvalidRequest"),
        (hook(secret=OLD), NEW, MAX_SECRET_GRACE + timedelta(seconds=1), "InvalidRequest"),
        (hook(secret=OLD), NEW, timedelta(seconds=-1), "InvalidRequest"),
    ],
)
def test_rotations_that_make_no_sense_are_refused(
    target: TargetSpec, secret: str, grace: timedelta, error: str
) -> None:
    with pytest.raises(InvalidRuleError) as caught:
        rotated_target(target, secret, grace, NOW)
    assert caught.value.error == error

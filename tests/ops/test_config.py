"""Settings that depend on the mode: what scale-out requires, and defaults that differ."""

from __future__ import annotations

from datetime import timedelta

import pytest

from stellwerk.config import ConfigError, Role, load_settings
from stellwerk.cpus import usable_cpus

NATS = "nats://127.0.0.1:4222"
POSTGRES = "postgresql://postgres@127.0.0.1:5432/stellwerk"


def test_a_role_of_its_own_needs_nats_and_a_shared_postgres_database() -> None:
    with pytest.raises(ConfigError, match="--nats-url"):
        load_settings({"role": "router"})
    with pytest.raises(ConfigError, match="shares its control plane"):
        load_settings({"role": "router", "nats_url": NATS})
    with pytest.raises(ConfigError, match="shares its control plane"):
        load_settings({"role": "router", "nats_url": NATS, "database_url": "sqlite:///x.db"})
    settings = load_settings({"role": "delivery", "nats_url": NATS, "database_url": POSTGRES})
    assert settings.role is Role.DELIVERY
    assert settings.database_url == "postgresql+asyncpg://postgres@127.0.0.1:5432/stellwerk"
    # One process on JetStream with its control plane in the data directory is fine.
    assert not load_settings({"nats_url": NATS}).embedded


def test_embedded_runs_a_gateway_and_a_pipeline_process_and_no_other_role_alone() -> None:
    assert load_settings({"role": "gateway"}).role is Role.GATEWAY
    assert load_settings({"role": "pipeline"}).role is Role.PIPELINE
    for role in ("router", "delivery", "scheduler", "status"):
        with pytest.raises(ConfigError, match="--role gateway and --role pipeline"):
            load_settings({"role": role})
    with pytest.raises(ConfigError, match="run --role router, delivery and scheduler"):
        load_settings({"role": "pipeline", "nats_url": NATS, "database_url": POSTGRES})


def test_processes_default_to_the_usable_cpus_at_most_two_only_for_every_role_embedded() -> None:
    assert load_settings({}).process_count == min(usable_cpus(), 2)
    assert load_settings({"processes": "1"}).process_count == 1
    assert load_settings({"processes": "8"}).process_count == 2
    assert load_settings({"role": "gateway"}).process_count == 1
    assert load_settings({"nats_url": NATS}).process_count == 1
    with pytest.raises(ConfigError, match="--processes"):
        load_settings({"processes": "2", "role": "gateway"})
    with pytest.raises(ConfigError, match="--processes"):
        load_settings({"processes": "2", "nats_url": NATS})
    with pytest.raises(ConfigError, match=r"outside 1\.\.1024"):
        load_settings({"processes": "0"})


def test_the_dedup_window_defaults_to_a_day_embedded_and_an_hour_on_jetstream() -> None:
    assert load_settings({}).dedup_window == timedelta(hours=24)
    assert load_settings({"nats_url": NATS}).dedup_window == timedelta(hours=1)
    chosen = load_settings({"nats_url": NATS, "dedup_window_seconds": "600"})
    assert chosen.dedup_window == timedelta(minutes=10)
    assert load_settings({"dedup_window_seconds": "0"}).dedup_window == timedelta(0)


def test_a_child_that_died_is_restarted_after_half_a_second_unless_set() -> None:
    assert load_settings({}).restart_backoff_seconds == 0.5
    assert load_settings({"restart_backoff_seconds": "0.05"}).restart_backoff_seconds == 0.05
    for refused, reason in (("0", r"outside 0\.01\.\.30"), ("31", "outside"), ("soon", "number")):
        with pytest.raises(ConfigError, match=f"--restart-backoff-seconds.*{reason}"):
            load_settings({"restart_backoff_seconds": refused})


def test_the_pipeline_runs_10_steps_of_nice_below_the_gateway_unless_set() -> None:
    assert load_settings({}).pipeline_nice == 10
    assert load_settings({"pipeline_nice": "0"}).pipeline_nice == 0
    for refused, reason in (("20", r"outside 0\.\.19"), ("-1", "outside"), ("low", "integer")):
        with pytest.raises(ConfigError, match=f"--pipeline-nice.*{reason}"):
            load_settings({"pipeline_nice": refused})


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("nats_namespace", "a.b", "letters, digits or '-'"),
        ("nats_replicas", "0", "outside 1..5"),
        ("delivery_lease_seconds", "1", "below 2 seconds"),
        ("nats_url", "http://x", "must start with nats://"),
    ],
)
def test_scale_out_settings_are_checked(name: str, value: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        load_settings({name: value})


@pytest.mark.parametrize("text", ["true", "TRUE", " True ", "1", "yes", "On"])
def test_a_switch_is_on_for_exactly_the_documented_words(text: str) -> None:
    assert load_settings({"allow_private_targets": text}).allow_private_targets is True


@pytest.mark.parametrize("text", ["false", "FALSE", "0", "no", "off", ""])
def test_a_switch_is_off_for_exactly_the_documented_words(text: str) -> None:
    assert load_settings({"allow_private_targets": text}).allow_private_targets is False


@pytest.mark.parametrize("text", ["t", "y", "n", "2", "enabled", "maybe", "ja"])
def test_any_other_switch_value_is_refused_with_the_words_it_takes(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"allow_private_targets": text})
    message = str(caught.value)
    assert message.startswith("--allow-private-targets (STELLWERK_ALLOW_PRIVATE_TARGETS): ")
    assert "true, 1, yes, on" in message
    assert "false, 0, no, off" in message


def test_an_smtp_url_is_checked_and_its_password_never_repeated() -> None:
    for bad in ("http://mail.example", "smtp://", "smtp://user:hunter2@mail.example:99999"):
        with pytest.raises(ConfigError, match="is not an SMTP URL") as refused:
            load_settings({"smtp_url": bad})
        assert "hunter2" not in str(refused.value)
    settings = load_settings({"smtp_url": "smtps://user:hunter2@mail.example:465"})
    assert settings.smtp_url == "smtps://user:hunter2@mail.example:465"
    assert "hunter2" not in repr(settings)
    assert load_settings({"smtp_from": "Acme <status@acme.example>"}).smtp_from == (
        "Acme <status@acme.example>"
    )
    with pytest.raises(ConfigError, match="is not an email address"):
        load_settings({"smtp_from": "nobody"})


def test_a_site_is_named_local_unless_set_and_its_name_is_checked() -> None:
    assert load_settings({}).site == "local"
    assert load_settings({"site": "eu-west-1"}).site == "eu-west-1"
    for bad in ("EU", "-a", "a b", "x" * 65):
        with pytest.raises(ConfigError) as caught:
            load_settings({"site": bad})
        assert str(caught.value).startswith("--site (STELLWERK_SITE): ")


def test_the_edge_role_needs_its_upstreams_and_endpoint_and_only_it_takes_them() -> None:
    edge = load_settings(
        {"role": "edge", "upstream": "http://a:8080, https://b:8443", "endpoint": "orders"}
    )
    assert edge.upstream == ("http://a:8080", "https://b:8443")
    for values, flag in [
        ({"role": "edge", "endpoint": "orders"}, "--upstream"),
        ({"role": "edge", "upstream": "http://a:1"}, "--endpoint"),
        ({"role": "edge", "upstream": "ftp://a:1", "endpoint": "e"}, "--upstream"),
        ({"upstream": "http://a:1"}, "--upstream"),
    ]:
        with pytest.raises(ConfigError) as caught:
            load_settings(values)
        assert str(caught.value).startswith(flag)

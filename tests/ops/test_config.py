"""Settings that depend on the mode: what scale-out requires, and defaults that differ."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest

from stellwerk.config import ConfigError, Role, load_settings

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


def test_processes_default_to_the_cores_at_most_two_and_only_for_every_role_embedded() -> None:
    cores = len(os.sched_getaffinity(0))
    assert load_settings({}).process_count == min(cores, 2)
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

"""Buses, rules and replays through the client, and the server's refusals as typed errors; each
test once with `Client` and once with `AsyncClient`."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from tests.client.conftest import Clients

from stellwerk.client import (
    BadRequest,
    Bus,
    Conflict,
    Forbidden,
    NotFound,
    RetryPolicy,
    StellwerkError,
    Target,
    Unauthorized,
)


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_buses_are_created_described_listed_and_deleted(clients: Clients) -> None:
    api = clients()
    bus = name("bus")
    created = await api.put_bus(bus, description="orders")
    assert isinstance(created, Bus)
    assert (created.name, created.description, created.schema_validation) == (bus, "orders", "off")
    updated = await api.put_bus(bus, description="all orders", schema_validation="warn")
    assert (updated.description, updated.schema_validation) == ("all orders", "warn")
    assert (await api.get_bus(bus)).description == "all orders"
    assert bus in [b.name for b in await api.list_buses()]
    await api.delete_bus(bus)
    with pytest.raises(NotFound) as raised:
        await api.get_bus(bus)
    assert (raised.value.status, raised.value.error) == (404, "NotFound")


async def test_a_bad_name_is_raised_with_the_field_the_server_named(clients: Clients) -> None:
    with pytest.raises(BadRequest) as raised:
        await clients().put_bus("no spaces allowed")
    error = raised.value
    assert (error.status, error.error, error.field) == (400, "InvalidRequest", "bus")
    assert "[A-Za-z0-9._-]{1,64}" in error.message


async def test_the_default_bus_cannot_be_deleted(clients: Clients) -> None:
    with pytest.raises(StellwerkError) as raised:
        await clients().delete_bus("default")
    assert raised.value.status in (400, 409)


async def test_keys_are_checked(clients: Clients) -> None:
    server = clients.server
    with pytest.raises(Forbidden):
        await clients(key=server.bootstrap.ingest_key).put_bus(name("bus"))
    with pytest.raises(Unauthorized):
        await clients(key="swk_nobody_nothing").list_buses()


async def test_rules_are_saved_described_listed_and_deleted(clients: Clients) -> None:
    api = clients()
    bus = (await api.put_bus(name("bus"))).name
    pattern = {"type": ["order.created"], "data": {"total": [{"numeric": [">", 100]}]}}
    rule = await api.put_rule(
        bus,
        "big-orders",
        pattern=pattern,
        targets=[
            Target(id="log", type="log", retry_policy=RetryPolicy(maximum_retry_attempts=3)),
            {"id": "copy", "type": "bus", "bus": "default"},
        ],
        description="orders above 100",
    )
    assert (rule.name, rule.bus, rule.state) == ("big-orders", bus, "enabled")
    assert rule.pattern == pattern
    assert [t.id for t in rule.targets] == ["log", "copy"]
    assert rule.targets[0].retry_policy == RetryPolicy(3, 86_400)
    assert rule.targets[1].bus == "default"
    disabled = await api.put_rule(bus, "big-orders", pattern=pattern, state="disabled")
    assert (disabled.state, disabled.targets) == ("disabled", [])
    assert (await api.get_rule(bus, "big-orders")).state == "disabled"
    assert [r.name for r in await api.list_rules(bus)] == ["big-orders"]
    await api.delete_rule(bus, "big-orders")
    assert await api.list_rules(bus) == []
    with pytest.raises(NotFound):
        await api.get_rule(bus, "big-orders")


async def test_a_pattern_the_server_cannot_use_is_raised_with_its_reason(
    clients: Clients,
) -> None:
    with pytest.raises(BadRequest) as raised:
        await clients().put_rule("default", name("rule"), pattern={"type": "not-a-list"})
    assert raised.value.error == "InvalidEventPatternException"
    assert "type" in raised.value.message


async def test_a_replay_is_started_followed_to_its_end_and_refused_a_second_time(
    clients: Clients,
) -> None:
    api = clients()
    bus = (await api.put_bus(name("bus"))).name
    archive = await api.put_archive(bus, "all", description="every event")
    assert (archive.name, archive.bus, archive.pattern, archive.retention_days) == (
        "all",
        bus,
        None,
        0,
    )
    await api.put_rule(bus, "everything", pattern={"source": ["urn:shop"]}, targets=[])
    start = datetime.now(UTC) - timedelta(seconds=1)
    events = [{"source": "urn:shop", "type": "order.created", "data": {"n": n}} for n in range(5)]
    await api.send(bus, events)
    replay_name = name("replay")
    end = datetime.now(UTC)
    started = await api.start_replay(replay_name, archive="all", bus=bus, start=start, end=end)
    assert (started.name, started.bus, started.archive) == (replay_name, bus, "all")
    finished = await api.wait_replay(replay_name, poll=0.05, within=20)
    assert (finished.state, finished.replayed, finished.total) == ("completed", 5, 5)
    assert finished.finished
    assert replay_name in [r.name for r in await api.list_replays(state="completed")]
    assert (await api.get_archive(bus, "all")).events == 5
    assert [a.name for a in await api.list_archives(bus)] == ["all"]
    with pytest.raises(Conflict):
        await api.cancel_replay(replay_name)  # it completed: nothing to cancel
    with pytest.raises(Conflict) as raised:
        await api.start_replay(replay_name, archive="all", bus=bus, start=start, end=end)
    assert raised.value.error == "ResourceAlreadyExists"


async def test_a_replay_of_an_archive_that_does_not_exist_is_refused(clients: Clients) -> None:
    start = "2026-01-01T00:00:00Z"
    with pytest.raises(BadRequest) as raised:
        await clients().start_replay(
            name("replay"), archive="nope", bus="default", start=start, end="2026-01-02T00:00:00Z"
        )
    assert raised.value.field == "archive"
    with pytest.raises(NotFound):
        await clients().get_replay(name("replay"))


async def test_a_replay_time_must_say_its_zone(clients: Clients) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        await clients().start_replay(
            "r", archive="a", bus="default", start=datetime(2026, 1, 1), end=datetime.now(UTC)
        )


async def test_the_state_of_an_endpoint_that_does_not_exist_is_not_found(
    clients: Clients,
) -> None:
    with pytest.raises(NotFound, match="endpoint 'global'"):
        await clients().endpoint_state("global")


async def test_archives_are_saved_described_and_deleted(clients: Clients) -> None:
    api = clients()
    bus = (await api.put_bus(name("bus"))).name
    pattern = {"type": ["order.created"]}
    saved = await api.put_archive(bus, "orders", pattern=pattern, retention_days=30)
    assert (saved.pattern, saved.retention_days) == (pattern, 30)
    assert (await api.get_archive(bus, "orders")).retention_days == 30
    await api.delete_archive(bus, "orders")
    assert await api.list_archives(bus) == []
    with pytest.raises(NotFound):
        await api.get_archive(bus, "orders")

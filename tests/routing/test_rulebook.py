"""The rule book on a real control plane (SQLite): which buses it holds, and when it says so."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from stellwerk.delivery.model import Target
from stellwerk.refs import BusRef, TenantName
from stellwerk.routing.rulebook import RuleBook
from stellwerk.rules import RuleInput, TargetSpec
from stellwerk.storage.control import ConnectionRecord, ControlPlane


def _no_targets(
    tenant: str, bus: str, spec: TargetSpec, connections: Mapping[str, ConnectionRecord]
) -> Target:
    raise AssertionError("no rule in these tests has a target")


async def test_the_rule_book_says_when_a_bus_comes_or_goes(tmp_path: Path) -> None:
    """In scale-out mode that wakes the lease keeper, so a new bus's router lease is claimed at
    once rather than at the next round."""
    control = await ControlPlane.open(f"sqlite+aiosqlite:///{tmp_path / 'control.db'}")
    try:
        acme = await control.create_tenant("acme")
        changes: list[list[tuple[str, str]]] = []
        book = RuleBook(
            control,
            _no_targets,
            buses_changed=lambda: changes.append(sorted((b.tenant, b.bus) for b in book.buses())),
        )

        await book.load()
        assert changes == [[("acme", "default")]]
        await book.reload(acme.id, "default")  # the same bus again: nothing new
        assert len(changes) == 1

        await control.put_bus(acme.id, "audit")
        await book.reload(acme.id, "audit")
        assert changes[-1] == [("acme", "audit"), ("acme", "default")]

        await control.delete_bus(acme.id, "audit")
        await book.reload(acme.id, None)
        assert changes[-1] == [("acme", "default")]
        assert len(changes) == 3
        await book.close()
    finally:
        await control.close()


async def test_a_bus_routes_from_where_its_log_ended_when_its_earliest_rule_was_enabled(
    tmp_path: Path,
) -> None:
    control = await ControlPlane.open(f"sqlite+aiosqlite:///{tmp_path / 'control.db'}")
    try:
        acme = await control.create_tenant("acme")
        book = RuleBook(control, _no_targets)
        bus = BusRef(TenantName("acme"), "default")
        on = RuleInput(pattern={"source": ["/orders"]})
        off = RuleInput(pattern={"source": ["/orders"]}, state="disabled")

        async def put(name: str, body: RuleInput, log_end: int | None) -> int:
            await control.rules.put(acme.id, "default", name, body, max_rules=10, log_end=log_end)
            await book.reload(acme.id, "default")
            return book.rule_set(bus).routes_after

        assert not await control.rules.any_enabled(bus)
        assert await put("first", on, 5) == 5
        assert await control.rules.any_enabled(bus)
        assert await put("first", on, 7) == 5  # saved again while enabled: still from 5
        assert await put("second", on, 9) == 5  # the earliest of the enabled rules
        assert await put("first", off, 11) == 9
        assert await put("first", on, 12) == 9  # enabled again: from 12, the second from 9
        await control.rules.delete(acme.id, "default", "second")
        await book.reload(acme.id, "default")
        assert book.rule_set(bus).routes_after == 12
        assert await put("third", on, None) == 0  # not known: from wherever the router is
        await book.close()
    finally:
        await control.close()

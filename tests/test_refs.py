"""A tenant's id and name are two types in the code and the same strings on the wire."""

from __future__ import annotations

import msgspec
import pytest

from stellwerk.auth import Principal, Scope
from stellwerk.refs import BusRef, TenantId, TenantName, TenantRef
from stellwerk.seams import Change, lease_name

ACME = TenantRef(TenantId("0b6c-id"), TenantName("acme"))


def test_a_principal_reads_its_tenant_by_id_and_by_name() -> None:
    principal = Principal(ACME, key_id="k", scope=Scope.READ)
    assert (principal.tenant_id, principal.tenant) == ("0b6c-id", "acme")


def test_changes_go_on_the_wire_as_they_did() -> None:
    rules = Change.of("rules", ACME.id, "orders")
    grant = Change.grant(ACME.name, "orders", TenantName("partner"))
    assert msgspec.json.encode(rules) == b'{"kind":"rules","tenant":"0b6c-id","bus":"orders"}'
    assert msgspec.json.encode(grant) == (
        b'{"kind":"grant","tenant":"acme","bus":"orders","name":"partner"}'
    )
    heard = msgspec.json.decode(msgspec.json.encode(grant), type=Change)
    assert (heard.owner, heard.grantee) == ("acme", "partner")
    assert msgspec.json.decode(msgspec.json.encode(rules), type=Change).tenant_id == "0b6c-id"


def test_a_change_refuses_to_be_read_by_the_other_key() -> None:
    with pytest.raises(ValueError, match="by name"):
        _ = Change.grant(ACME.name, "orders", TenantName("partner")).tenant_id
    with pytest.raises(ValueError, match="by id"):
        _ = Change.of("bus", ACME.id, "orders").owner
    with pytest.raises(ValueError, match=r"Change\.grant"):
        Change.of("grant", ACME.id, "orders", "partner")


def test_a_bus_is_one_value_made_once_from_the_principal() -> None:
    principal = Principal(ACME, key_id="k", scope=Scope.READ)
    orders = principal.bus("orders")
    assert orders == BusRef(TenantName("acme"), "orders") == ACME.bus("orders")
    assert {orders: 1}[BusRef(TenantName("acme"), "orders")] == 1
    assert str(orders) == "acme/orders"
    assert sorted([ACME.bus("b"), BusRef(TenantName("a"), "z"), ACME.bus("a")]) == [
        BusRef(TenantName("a"), "z"),
        ACME.bus("a"),
        ACME.bus("b"),
    ]
    with pytest.raises(AttributeError):
        orders.bus = "other"  # type: ignore[misc]


def test_lease_names_read_as_they_did() -> None:
    assert lease_name("router", ACME.bus("orders")) == "router/acme/orders"

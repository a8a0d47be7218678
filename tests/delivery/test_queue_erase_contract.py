"""The delivery queue's part in an erasure, for every backend in `queue_support.BACKENDS`."""

from __future__ import annotations

from datetime import timedelta

from msgspec.structs import replace
from tests.delivery.queue_support import new_delivery
from tests.storage.eventlog_support import ACME_DEFAULT, T0

from stellwerk.refs import BusRef, TenantName
from stellwerk.seams import DeliveryQueue, ErasedDeliveries

LEASE = 30.0
LATER = T0 + timedelta(hours=1)


def _never(payload: bytes, content_type: str) -> bool:
    return False


async def _dead(queue: DeliveryQueue, position: int) -> None:
    """Make the delivery of this position a dead letter (it must be the only one due)."""
    (leased,) = await queue.lease(T0, 1, LEASE)
    assert leased.position == position
    await queue.dead_letter(leased.id, "410 Gone")


async def test_deliveries_of_erased_positions_go_pending_and_dead(queue: DeliveryQueue) -> None:
    await queue.route(ACME_DEFAULT, 1, [new_delivery(1)])
    await _dead(queue, 1)
    await queue.route(
        ACME_DEFAULT,
        3,
        [new_delivery(2), new_delivery(3), new_delivery(3, rule="r2")],
    )
    await queue.route(BusRef(TenantName("acme"), "audit"), 3, [new_delivery(3, bus="audit")])
    await queue.route(
        BusRef(TenantName("other"), "default"), 3, [new_delivery(3, tenant=TenantName("other"))]
    )

    erased = await queue.erase(
        TenantName("acme"), None, {("default", 1), ("default", 3)}, b"unused-needle", _never
    )

    assert erased == ErasedDeliveries(pending=2, dead=1)
    assert await queue.dead_letters(ACME_DEFAULT) == []
    left = await queue.lease(LATER, 10, LEASE)
    assert sorted((d.tenant, d.bus, d.position) for d in left) == [
        ("acme", "audit", 3),
        ("acme", "default", 2),
        ("other", "default", 3),
    ]


async def test_erase_keeps_to_the_bus_it_is_given(queue: DeliveryQueue) -> None:
    await queue.route(ACME_DEFAULT, 3, [new_delivery(3)])
    await queue.route(BusRef(TenantName("acme"), "audit"), 3, [new_delivery(3, bus="audit")])

    erased = await queue.erase(
        TenantName("acme"), "audit", {("audit", 3), ("default", 3)}, b"x", _never
    )

    assert erased == ErasedDeliveries(pending=1, dead=0)
    assert [d.bus for d in await queue.lease(LATER, 10, LEASE)] == ["default"]


async def test_payloads_that_carry_the_value_go_without_a_position(queue: DeliveryQueue) -> None:
    ann = [
        replace(new_delivery(1), payload=b'{"data":{"user":"ann"}}'),
        replace(new_delivery(2), payload=b'{"data":{"user":"annabel"}}'),
        replace(new_delivery(3), payload=b'{"data":{"user":"bob"}}'),
    ]
    await queue.route(ACME_DEFAULT, 3, ann)
    offered: list[bytes] = []

    def matches(payload: bytes, content_type: str) -> bool:
        offered.append(payload)
        assert content_type == "application/cloudevents+json"
        return payload == b'{"data":{"user":"ann"}}'

    erased = await queue.erase(TenantName("acme"), None, set(), b"ann", matches)

    assert erased == ErasedDeliveries(pending=1, dead=0)
    assert len(offered) == 2  # bob's payload lacks the needle: never offered
    assert sorted(d.position for d in await queue.lease(LATER, 10, LEASE)) == [2, 3]


async def test_erasing_an_ordered_head_lets_its_group_go_on(queue: DeliveryQueue) -> None:
    await queue.route(
        ACME_DEFAULT,
        2,
        [new_delivery(1, ordering_key="u1"), new_delivery(2, ordering_key="u1")],
    )

    await queue.erase(TenantName("acme"), None, {("default", 1)}, b"x", _never)

    assert [d.position for d in await queue.lease(LATER, 10, LEASE)] == [2]


async def test_a_leased_delivery_erased_meanwhile_is_gone_for_its_worker(
    queue: DeliveryQueue,
) -> None:
    await queue.route(ACME_DEFAULT, 2, [new_delivery(1), new_delivery(2)])
    leased = await queue.lease(T0, 10, LEASE)

    await queue.erase(TenantName("acme"), None, {("default", 1), ("default", 2)}, b"x", _never)
    await queue.ack(leased[0].id)
    await queue.retry(leased[1].id, T0, "503")

    assert await queue.lease(LATER, 10, LEASE) == []
    assert await queue.dead_letters(ACME_DEFAULT) == []
    assert await queue.depth() == []


async def test_shared_payloads_go_with_their_deliveries(queue: DeliveryQueue) -> None:
    payload = b'{"data":{"user":"ann","padding":"' + b"x" * 100 + b'"}}'
    shared = [replace(new_delivery(1, rule=f"r{n}"), payload=payload) for n in range(3)]
    await queue.route(ACME_DEFAULT, 1, [*shared, new_delivery(1, rule="plain")])

    erased = await queue.erase(TenantName("acme"), None, {("default", 1)}, b"x", _never)

    assert erased == ErasedDeliveries(pending=4, dead=0)
    assert await queue.lease(LATER, 10, LEASE) == []

"""Snowplow's own Python tracker (`snowplow-tracker`), unchanged, pointed at Stellwerk: its GET
emitter (the pixel, `/i`) and its POST emitter (`tp2`), with JSON sent as base64 and as plain
text, send over HTTP on loopback to the app behind uvicorn, and every event arrives as a
CloudEvent `snowplow.<event>` with its JSON decoded. The tracker is synchronous (`requests`),
so it runs in a worker thread while the event loop serves it."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from snowplow_tracker.emitters import Emitter
from snowplow_tracker.events.page_ping import PagePing
from snowplow_tracker.events.page_view import PageView
from snowplow_tracker.events.self_describing import SelfDescribing
from snowplow_tracker.events.structured_event import StructuredEvent
from snowplow_tracker.self_describing_json import SelfDescribingJson
from snowplow_tracker.subject import Subject
from snowplow_tracker.tracker import Tracker
from tests.tracking.test_sdks import Served, served

__all__ = ["served"]  # the fixture, imported to be found

WEB_PAGE = "iglu:com.snowplowanalytics.snowplow/web_page/jsonschema/1-0-0"
ADD_TO_CART = "iglu:com.acme/add_to_cart/jsonschema/1-0-2"
KINDS = [
    "snowplow.page_view",
    "snowplow.page_ping",
    "snowplow.struct",
    "snowplow.add_to_cart",
    "snowplow.transaction",
    "snowplow.transaction_item",
]


async def snowplow_key(served: Served) -> str:
    async with httpx.AsyncClient(base_url=served.url) as client:
        made = await client.put("/v1/sources/web", headers=served.admin, json={"kind": "snowplow"})
    assert made.status_code == 201, made.text
    key: str = made.json()["write_key"]
    return key


class Outcomes:
    """What the emitter's callbacks were told: the events sent, and the failures."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.failed: list[tuple[int, list[dict[str, Any]]]] = []

    def success(self, events: list[dict[str, Any]]) -> None:
        self.sent += events

    def failure(self, succeeded: int, events: list[dict[str, Any]]) -> None:
        self.failed.append((succeeded, events))


def tracker_of(served: Served, key: str, method: str, base64: bool, outcomes: Outcomes) -> Tracker:
    address = urlsplit(served.url)
    emitter = Emitter(
        f"{address.hostname}",
        protocol="http",
        port=address.port,
        method=method,  # type: ignore[arg-type]
        on_success=outcomes.success,
        on_failure=outcomes.failure,
        request_timeout=10,
    )
    subject = Subject().set_user_id("u-1").set_platform("web")
    return Tracker(
        f"{method}-{'b64' if base64 else 'plain'}",
        emitter,
        subject=subject,
        app_id=key,
        encode_base64=base64,
    )


def every_kind(tracker: Tracker) -> list[str]:
    """One event of each kind the tracker has, as a shop's backend sends them, then a flush;
    the events' ids."""
    page = [SelfDescribingJson(WEB_PAGE, {"id": "p-1"})]
    ids = [
        tracker.track(PageView(page_url="https://shop.example/", page_title="Shop", context=page)),
        tracker.track(PagePing(page_url="https://shop.example/", min_y=0, max_y=800)),
        tracker.track(StructuredEvent("shop", "add", label="s-1", value=2)),
        tracker.track(SelfDescribing(SelfDescribingJson(ADD_TO_CART, {"sku": "s-1"}))),
    ]
    # The tracker has no event class for transactions (yet): its older call, deprecated.
    with pytest.deprecated_call():
        tracker.track_ecommerce_transaction(
            "o-1", 42.5, currency="EUR", items=[{"sku": "s-1", "price": 21.25, "quantity": 2}]
        )
    tracker.flush()
    return [i for i in ids if i is not None]


@pytest.mark.parametrize(
    ("method", "base64"), [("post", True), ("post", False), ("get", True), ("get", False)]
)
async def test_snowplows_python_tracker_sends_unchanged(
    served: Served, method: str, base64: bool
) -> None:
    key = await snowplow_key(served)
    outcomes = Outcomes()
    ids = await asyncio.to_thread(every_kind, tracker_of(served, key, method, base64, outcomes))
    assert outcomes.failed == []
    assert len(outcomes.sent) == len(KINDS)

    events = await served.events()
    assert [e["type"] for e in events] == KINDS
    assert [e["id"] for e in events][:4] == ids
    assert {e["source"] for e in events} == {"/sources/web"}
    assert {e["subject"] for e in events} == {"u-1"}
    assert all(e["time"].endswith("Z") for e in events)
    page_view, _, struct, add_to_cart, transaction, item = (e["data"] for e in events)
    assert page_view["contexts"] == [{"schema": WEB_PAGE, "data": {"id": "p-1"}}]
    assert (page_view["url"], page_view["page"], page_view["p"]) == (
        "https://shop.example/",
        "Shop",
        "web",
    )
    assert page_view["tv"].startswith("py-")
    assert (struct["se_ca"], struct["se_ac"], struct["se_la"]) == ("shop", "add", "s-1")
    assert add_to_cart["self_describing_event"] == {"schema": ADD_TO_CART, "data": {"sku": "s-1"}}
    assert (transaction["tr_id"], transaction["tr_cu"]) == ("o-1", "EUR")
    assert (item["ti_sk"], item["ti_qu"]) == ("s-1", "2")
    assert all("aid" not in e["data"] for e in events)
    for name in ("cx", "co", "ue_px", "ue_pr"):
        assert all(name not in e["data"] for e in events)


async def test_the_tracker_is_told_of_a_wrong_app_id_and_does_not_retry(served: Served) -> None:
    for method in ("post", "get"):
        outcomes = Outcomes()
        wrong = "wk_0123456789abcdef_not-the-right-secret-at-all"
        tracker = tracker_of(served, wrong, method, True, outcomes)

        def one(tracker: Tracker = tracker) -> None:
            tracker.track(PageView(page_url="https://shop.example/"))
            tracker.flush()

        await asyncio.to_thread(one)
        assert [(n, len(events)) for n, events in outcomes.failed] == [(0, 1)], method
        # A 401 is not among the statuses the tracker retries: no retry is pending.
        emitter = tracker.emitters[0]
        assert isinstance(emitter, Emitter)
        assert not emitter.retry_timer.is_active()
    assert await served.events() == []

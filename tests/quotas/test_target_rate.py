"""A tenant's cap on each target's invocations: short waits are slept through, longer ones go
back to the queue as throttled retries; deliveries are delayed, never dropped."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
from tests.conftest import app_running
from tests.e2e.receiving import running_receiver
from tests.polling import eventually

from stellwerk.config import load_settings
from stellwerk.delivery import Delivered, Outcome, RetryLater, TargetBinding, TenantThrottle
from stellwerk.ratelimit import Spent
from stellwerk.refs import TenantName
from stellwerk.seams import Delivery


class Counting:
    def __init__(self) -> None:
        self.delivered: list[str] = []

    async def deliver(self, delivery: Delivery) -> Outcome:
        self.delivered.append(delivery.event_id)
        return Delivered()

    async def close(self) -> None:
        pass


def delivery(event_id: str) -> Delivery:
    return Delivery(
        id=1,
        tenant=TenantName("acme"),
        bus="default",
        rule="r",
        target_id="t",
        event_id=event_id,
        event_source="s",
        position=1,
        recorded_time=datetime.now(UTC),
        payload=b"{}",
        content_type="application/json",
        attempts=0,
    )


async def test_a_short_wait_is_slept_through_and_a_long_one_retried_later() -> None:
    answers: list[Spent | None] = [Spent(2.0, 0.01), None, Spent(0.001, 900.0)]
    asked: list[tuple[str, str]] = []

    async def budget(tenant: TenantName, target: str) -> Spent | None:
        asked.append((tenant, target))
        return answers.pop(0)

    inner = Counting()
    resolve = TenantThrottle(budget).targets(lambda *key: TargetBinding(inner))
    binding = resolve(TenantName("acme"), "default", "r", "t")
    assert binding is not None
    assert await binding.target.deliver(delivery("a")) == Delivered()
    assert asked == [("acme", "default/r/t")] * 2  # refused, slept 10 ms, granted
    later = await binding.target.deliver(delivery("b"))
    assert later == RetryLater(
        "the tenant's target invocation rate (0.001/s) is reached",
        retry_after=900.0,
        throttled=True,
    )
    assert inner.delivered == ["a"]  # the target never saw "b": it comes again later


async def test_a_running_server_holds_a_targets_invocations_to_the_tenants_rate(
    tmp_path: Path,
) -> None:
    settings = load_settings({"data_dir": str(tmp_path / "data"), "allow_private_targets": "true"})
    with running_receiver() as (received, url):
        async with app_running(settings) as app:
            # One invocation, then none for 1000 s.
            quotas = app.services.platform.quotas
            await quotas.update("default", {"target_invocations_per_second": 0.001})
            rule = {
                "pattern": {"source": ["s"]},
                "targets": [{"id": "hook", "type": "http", "url": url}],
            }
            put = await app.client.put("/v1/buses/default/rules/r", headers=app.admin, json=rule)
            assert put.is_success, put.text
            events = [
                {"specversion": "1.0", "id": f"e{n}", "source": "s", "type": "t"} for n in (1, 2)
            ]
            sent = await app.client.post("/v1/buses/default/events", headers=app.admin, json=events)
            assert sent.status_code == 202, sent.text

            async def history(event_id: str) -> httpx.Response:
                return await app.client.get(
                    f"/v1/buses/default/events/{event_id}", headers=app.admin
                )

            async def throttled() -> str:
                """The id of the event whose last attempt was refused, once there is one."""
                for event_id in ("e1", "e2"):
                    answer = await history(event_id)
                    if answer.status_code == 200:
                        attempts = answer.json()["targets"][0]["attempts"]
                        if attempts[-1]["outcome"] == "retrying":
                            return event_id
                return ""

            waiting = await eventually(throttled, within=20)
            assert received.wait_for(lambda r: len(r.ids) == 1, 20)
            assert waiting not in received.ids  # the other one went through
            attempt = (await history(waiting)).json()["targets"][0]["attempts"][-1]
            assert attempt["error"] == "the tenant's target invocation rate (0.001/s) is reached"
            metrics = (await app.client.get("/metrics")).text
            labels = 'bus="default",rule="r",target="hook",tenant="default"'
            assert f"stellwerk_throttled_total{{{labels}}} 1.0" in metrics

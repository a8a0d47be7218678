"""`--otlp-endpoint`: a span per ingest request and per delivery attempt, with the event id,
exported over OTLP/HTTP to a local collector stand-in."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
from tests.ops.receivers import attributes, receiver, spans

from stellwerk.app import build_app
from stellwerk.config import load_settings
from stellwerk.ops.tracing import traces_url


async def test_ingest_and_delivery_attempts_are_spans_with_the_event_id(tmp_path: Path) -> None:
    with receiver() as (collector, traces), receiver() as (hook, webhooks):
        settings = load_settings(
            {
                "data_dir": str(tmp_path / "data"),
                "otlp_endpoint": collector,
                "allow_private_targets": True,
            }
        )
        app = build_app(settings)
        async with app.router.lifespan_context(app):
            await asyncio.wait_for(app.state.lifecycle.wait_started(), 30)
            keys = json.loads((settings.data_dir / "bootstrap.json").read_text())
            admin = {"Authorization": f"Bearer {keys['admin_key']}"}
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://s") as client:
                rule = {
                    "pattern": {"type": ["order.created"]},
                    "targets": [{"id": "hook", "type": "http", "url": f"{hook}/orders"}],
                }
                put = await client.put("/v1/buses/default/rules/orders", json=rule, headers=admin)
                assert put.status_code == 201, put.text
                events = [
                    {"specversion": "1.0", "id": f"o-{n}", "source": "urn:shop", "type": t}
                    for n, t in enumerate(["order.created", "order.paid"])
                ]
                sent = await client.post("/v1/buses/default/events", json=events, headers=admin)
                assert sent.status_code == 202
                refused = await client.post(
                    "/v1/buses/default/events",
                    content=b"{",
                    headers={**admin, "Content-Type": "application/json"},
                )
                assert refused.status_code == 400
            await asyncio.to_thread(webhooks.wait_for, webhooks.snapshot)
        # Closing the app flushed the spans.
        found = spans(traces)
    by_name: dict[str, list[dict[str, object]]] = {}
    for span in found:
        by_name.setdefault(span.name, []).append(attributes(span))
    ingests = by_name["ingest"]
    (accepted,) = [a for a in ingests if a["http.response.status_code"] == 202]
    assert accepted["cloudevents.event_id"] == "o-0"
    assert accepted["stellwerk.event_ids"] == ["o-0", "o-1"]
    assert accepted["stellwerk.events"] == 2
    assert accepted["stellwerk.bus"] == "default"
    (bad,) = [a for a in ingests if a["http.response.status_code"] == 400]
    assert "cloudevents.event_id" not in bad  # nothing was appended
    (delivered,) = by_name["deliver"]
    assert delivered["cloudevents.event_id"] == "o-0"
    assert delivered["stellwerk.target"] == "hook"
    assert delivered["stellwerk.rule"] == "orders"
    assert delivered["stellwerk.attempt"] == 1
    assert delivered["stellwerk.outcome"] == "Delivered"
    assert set(by_name) == {"ingest", "deliver"}


def test_an_endpoint_without_a_path_gets_otlps_traces_path() -> None:
    assert traces_url("http://collector:4318") == "http://collector:4318/v1/traces"
    assert traces_url("http://collector:4318/") == "http://collector:4318/v1/traces"
    assert traces_url("https://c.example/v1/traces") == "https://c.example/v1/traces"

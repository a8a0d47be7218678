"""Readiness follows the backing services (issue #20): each scale-out role reports not ready
while NATS is stopped, and ready again, without a restart, once the same server (same port, same
store) is back; then events flow again end to end."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from tests import polling
from tests.cli.server import ServerProcess
from tests.e2e.receiving import Received
from tests.e2e.scale_out import ScaleOut, first_through, keys_of, load_batch, put_rule
from tests.nats_support import NatsServer

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
WITHIN = 60.0


def post_until_accepted(gateway: ServerProcess, ingest_key: str, start: int) -> None:
    """Post one event, retrying 503s (a store not back yet) as a client would."""

    def accepted() -> bool:
        response = httpx.post(
            f"{gateway.url}/v1/buses/default/events",
            json=load_batch(start, 1),
            headers={"Authorization": f"Bearer {ingest_key}"},
            timeout=30,
        )
        assert response.status_code in (202, 503), response.text
        return response.status_code == 202

    polling.wait_until(accepted, within=WITHIN, every=0.2)


def test_every_role_is_unready_while_nats_is_stopped_and_ready_when_it_returns(
    nats_server: NatsServer,
    postgres_url: str,
    tmp_path: Path,
    threaded_receiver: tuple[Received, str],
) -> None:
    received, url = threaded_receiver
    scale_out = ScaleOut(nats_server.url, postgres_url, tmp_path)
    with (
        scale_out.role("gateway") as gateway,
        scale_out.together(["router"], ["delivery"], ["scheduler"]) as (
            router,
            delivery,
            scheduler,
        ),
    ):
        roles = [gateway, router, delivery, scheduler]
        keys = keys_of(gateway)
        rule = {"pattern": {"type": ["load"]}, "targets": [{"id": "h", "type": "http", "url": url}]}
        put_rule(gateway, keys["admin_key"], "all", rule)
        first_through(gateway, keys["ingest_key"], received, 100, within=WITHIN)

        nats_server.stop()
        stopped = time.monotonic()
        for process in roles:
            answer = process.wait_until("/readyz", 503, timeout=WITHIN)
            assert answer.json()["status"] == "unavailable"

        nats_server.start()  # the same port and store
        away = time.monotonic() - stopped
        for process in roles:
            process.wait_until("/readyz", 200, timeout=WITHIN)
        post_until_accepted(gateway, keys["ingest_key"], 1)
        assert received.wait_for(lambda r: "e1" in r.ids, WITHIN), "no event after NATS came back"
        assert all(process.process.poll() is None for process in roles)

    # The outage is a few lines per process, not one per attempt or per scan: a line per NATS
    # client (event log, queue, leases, archives, signals) and one for the queue's scan, each
    # with a reminder a minute.
    reminders = int(away // 60) + 1
    for process in roles:
        events = Counter(_events(process.output()))
        assert events["nats_unreachable"] <= 5, (process.url, events)
        assert events["nats_still_unreachable"] <= 5 * reminders, (process.url, events)
        assert events["delivery_queue_scan_failed"] <= 1 + reminders, (process.url, events)


def _events(log: str) -> list[str]:
    events = []
    for line in log.splitlines():
        try:
            events.append(str(json.loads(line)["event"]))
        except (ValueError, KeyError, TypeError):
            continue
    return events

"""One role per process on JetStream and PostgreSQL: gateways, routers and delivery workers as
separate `stellwerk serve` processes share the work and hear each other's changes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.e2e.receiving import Received
from tests.e2e.scale_out import ScaleOut, keys_of, load_batch, put_rule
from tests.nats_support import NatsServer
from tests.polling import wait_until

pytestmark = pytest.mark.slow  # starts processes


@pytest.fixture
def scale_out(nats_server: NatsServer, postgres_url: str, tmp_path: Path) -> ScaleOut:
    return ScaleOut(nats_server.url, postgres_url, tmp_path)


def test_gateway_router_and_delivery_processes_carry_every_event_to_the_target(
    scale_out: ScaleOut, threaded_receiver: tuple[Received, str]
) -> None:
    received, url = threaded_receiver
    with (
        scale_out.role("gateway") as gateway,
        scale_out.together(["router"], ["delivery"]) as (router, delivery),
    ):
        keys = keys_of(gateway)
        put_rule(
            gateway,
            keys["admin_key"],
            "all",
            {
                "pattern": {"type": ["load"]},
                "targets": [{"id": "hook", "type": "http", "url": url}],
            },
        )
        ingest = {"Authorization": f"Bearer {keys['ingest_key']}"}
        with httpx.Client(base_url=gateway.url, headers=ingest, timeout=30) as client:
            # The router and the delivery process take the rule in when its signal reaches
            # them, each with a reload of its own; until then events are routed without it (or
            # their deliveries dead-lettered as the rule's orphans). On a loaded machine that
            # took longer than the first batches (history3's report): a probe that arrives
            # says the rule is in force in both.
            probes = iter(range(1_000_000))

            def in_force() -> bool:
                probe = {**load_batch(0, 1)[0], "id": f"probe{next(probes)}"}
                response = client.post("/v1/buses/default/events", json=[probe])
                assert response.status_code == 202, response.text
                return received.wait_for(lambda r: probe["id"] in r.ids, 2)

            wait_until(in_force, what="the rule in force in the router and delivery processes")
            for start in range(0, 500, 100):
                response = client.post("/v1/buses/default/events", json=load_batch(start, 100))
                assert response.status_code == 202, response.text
        wanted = {f"e{n}" for n in range(500)}
        assert received.wait_for(lambda r: wanted <= set(r.ids), 60), (
            f"{len(wanted - set(received.ids))} events never arrived"
        )
        # The delivery process recorded each attempt; the gateway reads it back.
        admin = {"Authorization": f"Bearer {keys['admin_key']}"}

        def history() -> Any:
            answer = httpx.get(f"{gateway.url}/v1/buses/default/events/e7", headers=admin)
            return answer.json() if answer.status_code == 200 else None

        found = wait_until(history, what="the history of e7 on the gateway")
        (hook,) = found["targets"]
        assert (found["rules"], hook["target"], hook["state"]) == (["all"], "hook", "delivered")
        assert hook["attempts"][-1]["status"] == 204  # what the receiver answers
        page = httpx.get(
            f"{gateway.url}/v1/buses/default/rules/all/targets/hook/attempts",
            params={"limit": "1000"},
            headers=admin,
        ).json()
        assert len({a["event_id"] for a in page["attempts"]}) >= 400
        # A gateway sends a delivered event again through the JetStream queue.
        again = httpx.post(f"{gateway.url}/v1/buses/default/events/e7/redeliver", headers=admin)
        assert again.status_code == 202, again.text
        assert again.json()["targets"] == [{"rule": "all", "target": "hook"}]
        assert received.wait_for(lambda r: r.ids["e7"] >= 2, 30), "e7 was not redelivered"
        # Only gateways serve the API; every role answers probes and metrics.
        for process in (router, delivery):
            assert httpx.get(f"{process.url}/v1/buses", timeout=5).status_code == 404
            assert httpx.get(f"{process.url}/readyz", timeout=5).status_code == 200
            assert httpx.get(f"{process.url}/metrics", timeout=5).status_code == 200
        assert (
            httpx.post(
                f"{router.url}/v1/buses/default/events", json=load_batch(0, 1), headers=ingest
            ).status_code
            == 404
        )
    assert sum(received.ids.values()) >= 500


def test_a_rule_changed_through_one_gateway_is_in_force_on_the_router_of_another_process(
    scale_out: ScaleOut, threaded_receiver: tuple[Received, str]
) -> None:
    """The router keeps rules in memory and never rereads them on a timer: only the change
    signal can make it route by the new pattern."""
    received, url = threaded_receiver
    with (
        scale_out.role("gateway") as first,
        scale_out.together(["gateway"], ["router"], ["delivery"]) as (second, _, _),
    ):
        keys = keys_of(first)
        target = [{"id": "hook", "type": "http", "url": url}]
        put_rule(first, keys["admin_key"], "r", {"pattern": {"type": ["old"]}, "targets": target})
        ingest = {"Authorization": f"Bearer {keys['ingest_key']}"}
        with httpx.Client(base_url=first.url, headers=ingest, timeout=30) as client:
            assert (
                client.post("/v1/buses/default/events", json=load_batch(0, 1, "old")).status_code
                == 202
            )
            assert received.wait_for(lambda r: "e0" in r.ids, 30)

            new_rule = {"pattern": {"type": ["new"]}, "targets": target}
            put_rule(second, keys["admin_key"], "r", new_rule)
            changed = time.monotonic()
            # "new" events sent before the router took the change in match nothing and are never
            # delivered; the first one to arrive shows the change in force.
            sent: list[str] = []
            n = 1
            while not received.wait_for(lambda r: any(i in r.ids for i in sent), 0.05):
                assert time.monotonic() - changed < 20, "the router never took in the change"
                response = client.post("/v1/buses/default/events", json=load_batch(n, 1, "new"))
                assert response.status_code == 202
                sent.append(f"e{n}")
                n += 1
            print(f"rule change in force after at most {time.monotonic() - changed:.3f} s")
            # And the old pattern is out of force: an "old" event, then a "new" one.
            old, last = f"e{n}", f"e{n + 1}"
            assert (
                client.post("/v1/buses/default/events", json=load_batch(n, 1, "old")).status_code
                == 202
            )
            assert (
                client.post(
                    "/v1/buses/default/events", json=load_batch(n + 1, 1, "new")
                ).status_code
                == 202
            )
            assert received.wait_for(lambda r: last in r.ids, 30)
            assert old not in received.ids


def test_an_archive_filled_by_the_router_process_is_replayed_by_the_scheduler_process(
    scale_out: ScaleOut, threaded_receiver: tuple[Received, str]
) -> None:
    received, url = threaded_receiver
    with (
        scale_out.role("gateway") as gateway,
        scale_out.together(["router"], ["delivery"], ["scheduler"]),
    ):
        keys = keys_of(gateway)
        admin = {"Authorization": f"Bearer {keys['admin_key']}"}
        hook = [{"id": "hook", "type": "http", "url": url}]
        rule = {"pattern": {"type": ["load"]}, "targets": hook}
        put_rule(gateway, keys["admin_key"], "all", rule)
        with httpx.Client(base_url=gateway.url, timeout=30) as client:
            archive = client.put("/v1/buses/default/archives/everything", json={}, headers=admin)
            assert archive.status_code == 201, archive.text
            start = datetime.now(UTC) - timedelta(minutes=1)
            ingest = {"Authorization": f"Bearer {keys['ingest_key']}"}
            for first in range(0, 200, 100):
                response = client.post(
                    "/v1/buses/default/events", json=load_batch(first, 100), headers=ingest
                )
                assert response.status_code == 202, response.text
            wanted = {f"e{n}" for n in range(200)}
            assert received.wait_for(lambda r: wanted <= set(r.ids), 60)
            archived = poll(
                lambda: client.get("/v1/buses/default/archives/everything", headers=admin).json(),
                lambda body: body["events"] == 200,
            )
            assert archived["events"] == 200
            replay = client.post(
                "/v1/replays",
                json={
                    "name": "again",
                    "archive": "everything",
                    "bus": "default",
                    "start": start.isoformat(),
                    "end": datetime.now(UTC).isoformat(),
                },
                headers=admin,
            )
            assert replay.status_code == 201, replay.text
            assert received.wait_for(lambda r: all(r.ids[i] >= 2 for i in wanted), 60)
            done = poll(
                lambda: client.get("/v1/replays/again", headers=admin).json(),
                lambda body: body["state"] == "completed",
            )
            assert done["state"] == "completed"


@dataclass
class _Sent:
    """A batch the load sent: when its request went out, when it was acknowledged, how many."""

    sent: float
    acked: float
    events: int


def _load(gateway_url: str, ingest_key: str, stop: threading.Event, out: list[_Sent]) -> None:
    headers = {"Authorization": f"Bearer {ingest_key}"}
    with httpx.Client(base_url=gateway_url, timeout=30) as client:
        first = 0
        while not stop.is_set():
            sent = time.monotonic()
            response = client.post(
                "/v1/buses/default/events", json=load_batch(first, 20), headers=headers
            )
            assert response.status_code == 202, response.text
            out.append(_Sent(sent, time.monotonic(), 20))
            first += 20


def test_an_archive_created_through_a_gateway_keeps_every_event_sent_after_the_answer(
    scale_out: ScaleOut,
) -> None:
    """The gateway's answer waits until the router process's archiver has taken the archive in
    (the bus's first, whose lease that process must take on first, and a second one under
    load), so nothing sent after the answer is missed and nothing sent before the request is
    taken."""
    with scale_out.role("gateway") as gateway, scale_out.role("router"):
        keys = keys_of(gateway)
        admin = {"Authorization": f"Bearer {keys['admin_key']}"}
        with httpx.Client(base_url=gateway.url, timeout=30) as client:
            first = client.put("/v1/buses/default/archives/first", json={}, headers=admin)
            assert first.json()["state"] != "creating", first.text
            batches: list[_Sent] = []
            stop = threading.Event()
            load = threading.Thread(
                target=_load, args=(gateway.url, keys["ingest_key"], stop, batches)
            )
            load.start()
            try:
                assert (
                    poll(
                        lambda: client.get(
                            "/v1/buses/default/archives/first", headers=admin
                        ).json(),
                        lambda body: body["events"] >= 200,
                    )["events"]
                    >= 200
                )  # the router process archives the bus as it grows
                asked = time.monotonic()
                second = client.put("/v1/buses/default/archives/second", json={}, headers=admin)
                answered = time.monotonic()
                assert second.status_code == 201, second.text
                assert second.json()["state"] != "creating", second.text
                deadline = answered + 1.0
                while time.monotonic() < deadline and load.is_alive():
                    load.join(0.05)  # the load goes on for a second after the answer
            finally:
                stop.set()
                load.join(30)
            done = poll(
                lambda: client.get("/v1/buses/default/archives/second", headers=admin).json(),
                lambda body: body["state"] == "enabled",
            )
    after = sum(b.events for b in batches if b.sent > answered)
    before = sum(b.events for b in batches if b.acked < asked)
    total = sum(b.events for b in batches)
    assert after > 0
    assert before > 0
    assert after <= done["events"] <= total - before


def poll(
    read: Callable[[], dict[str, Any]],
    done: Callable[[dict[str, Any]], bool],
    within: float = 30.0,
) -> dict[str, Any]:
    """Read until `done` (a bounded loop, not a sleep standing in for synchronisation)."""
    return wait_until(read, within=within, every=0.1, accept=done)

"""The standby follows the active site's deliveries, not only its routing: deliveries the primary
had queued but not made when it was SIGKILLed are made by the secondary after the failover
(at least once: duplicates are counted, none is lost).

The run prints what it counted: queued on the primary, delivered after the kill, lost,
delivered twice, and the time from the kill to the last of them delivered."""

from __future__ import annotations

import signal
import time
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

import pytest
from tests.polling import wait_until
from tests.sites.support import receiving
from tests.sites.test_failover import endpoint, event, paired_with_endpoint, put_rule

pytestmark = pytest.mark.slow

QUEUED = 10  # under the 20 first attempts a latency signal needs: the probe alone judges a


def test_deliveries_the_primary_queued_but_did_not_make_are_made_by_the_secondary(
    tmp_path: Path,
) -> None:
    with ExitStack() as stack:
        a, b = paired_with_endpoint(stack, tmp_path, "async")
        receiver = stack.enter_context(receiving())
        put_rule(a, receiver)
        wait_until(
            lambda: b.api("GET", "/v1/buses/default/rules/load").status_code,
            what="the rule mirrored to b",
            accept=lambda status: status == 200,
        )
        receiver.hold()  # a's deliveries hang: they stay queued (in flight or waiting) on a
        ids = [f"k-{n}" for n in range(QUEUED)]
        # One request each: the events of one request may share a recorded time.
        for n in range(QUEUED):
            assert a.send("default", [event(n)]).status_code == 202
        on_b = b.events("default", QUEUED)
        assert [e["id"] for e in on_b] == ids
        first = datetime.fromisoformat(on_b[0]["originrecordedtime"])
        # a routes the events (its router goes past them all) but makes none of
        # their deliveries: it tells b it has delivered up to its first event, not past it.
        wait_until(lambda: receiver.holding(), what="a to attempt a delivery")
        told = wait_until(
            lambda: endpoint(b)["delivered_through"],
            what="b to learn how far a delivered",
            accept=lambda through: "default" in through,
        )
        assert datetime.fromisoformat(told["default"]) == first
        assert sum(receiver.count().values()) == 0

        a.server.terminate(signal.SIGKILL)
        killed = time.monotonic()
        receiver.release()
        wait_until(
            lambda: endpoint(b),
            what="b to take over",
            accept=lambda e: e["state"] == "failed-over" and e["active"] == "b",
            within=30,
        )
        delivered = wait_until(
            receiver.count,
            what="b to make the deliveries a had queued",
            accept=lambda seen: all(i in seen for i in ids),
            within=30,
        )
        took = time.monotonic() - killed
        lost = [i for i in ids if i not in delivered]
        twice = sum(1 for i in ids if delivered[i] > 1)
        print(
            f"\nqueued on a: {QUEUED} ({sum(receiver.holding().values())} attempts hanging at "
            f"the kill), delivered by b: {sum(1 for i in ids if i in delivered)}, "
            f"lost={len(lost)} twice={twice}, kill to all delivered {took:.1f}s"
        )
        assert lost == []
        # Nothing of them was made by a (its receiver never answered), so b made each once.
        assert max(delivered[i] for i in ids) == 1

"""A rule with `"sites": "all"` routes on both sites of a global endpoint, the standby too: each
site delivers each event once to it (for regional consumers), while a rule of the active site
only delivers each event once in all."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from tests.polling import wait_until
from tests.sites.support import Receiver, Site, receiving
from tests.sites.test_failover import event, paired_with_endpoint

pytestmark = pytest.mark.slow


def rule(receiver: Receiver, **extra: Any) -> dict[str, Any]:
    return {
        "pattern": {"source": ["urn:load"]},
        "targets": [{"id": "hook", "type": "http", "url": receiver.url}],
        **extra,
    }


def mirrored(site: Site, name: str) -> dict[str, Any]:
    found: dict[str, Any] = wait_until(
        lambda: site.api("GET", f"/v1/buses/default/rules/{name}"),
        what=f"rule {name} mirrored to {site.name}",
        accept=lambda answer: answer.status_code == 200,
    ).json()
    return found


def test_a_rule_for_all_sites_delivers_from_both_and_an_active_site_rule_from_one(
    tmp_path: Path,
) -> None:
    with ExitStack() as stack:
        a, b = paired_with_endpoint(stack, tmp_path, "async")
        here = stack.enter_context(receiving())
        regional = stack.enter_context(receiving())
        for name, body in (("here", rule(here)), ("regional", rule(regional, sites="all"))):
            answer = a.api("PUT", f"/v1/buses/default/rules/{name}", json=body)
            assert answer.status_code == 201, answer.text
        assert "sites" not in mirrored(b, "here")
        assert mirrored(b, "regional")["sites"] == "all"

        assert a.send("default", [event(n) for n in range(5)]).status_code == 202
        # A producer that sent to the standby: it stores the event, a routes it.
        assert b.send("default", [event(0, "to-b")]).status_code == 202
        ids = [*(f"k-{n}" for n in range(5)), "to-b-0"]
        delivered = wait_until(
            regional.count,
            what="both sites to deliver every event to the regional rule",
            accept=lambda seen: all(seen[i] >= 2 for i in ids),
        )
        once = wait_until(
            here.count,
            what="the active site to deliver every event to its rule",
            accept=lambda seen: all(i in seen for i in ids),
        )
        print(f"\nregional: {dict(delivered)}\nactive site only: {dict(once)}")
        # Each site routes each event once: twice in all for the regional rule, once for the
        # other (b stands by for it).
        assert all(delivered[i] == 2 for i in ids)
        assert all(once[i] == 1 for i in ids)

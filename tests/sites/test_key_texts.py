"""A key made on one site signs AWS SigV4 requests on its peer, also once the first site is
dead: the key's text travels sealed under the pair's secret and is sealed at rest on the peer
as the peer seals its own keys. Two real sites, real boto3; and the sealing itself."""

from __future__ import annotations

import json
import signal
import sqlite3
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from tests.polling import wait_until
from tests.sites.support import SECRET, Site, pair, two_sites

from stellwerk.auth import parse_key
from stellwerk.sites import UnopenedKeys, open_texts, seal_texts

TEXTS = {"k1": "swk_k1_secret-one", "k2": "swk_k2_secret-two"}
BOUND = {"tenant": "default", "sender": "a", "receiver": "b"}


def test_key_texts_open_only_with_the_pair_secret_for_their_tenant_and_direction() -> None:
    sealed = seal_texts(SECRET, TEXTS, **BOUND)
    assert all(text not in sealed for text in TEXTS.values())
    assert sealed != seal_texts(SECRET, TEXTS, **BOUND)  # a fresh salt and nonce each time
    assert open_texts(SECRET, sealed, **BOUND) == TEXTS
    elsewhere: list[dict[str, str]] = [
        {**BOUND, "tenant": "other"},
        {**BOUND, "sender": "b", "receiver": "a"},  # sent back to its sender
        {**BOUND, "receiver": "c"},
    ]
    for bound in elsewhere:
        with pytest.raises(UnopenedKeys, match="do not open"):
            open_texts(SECRET, sealed, **bound)
    with pytest.raises(UnopenedKeys, match="do not open"):
        open_texts("another-pair-secret-0123456789", sealed, **BOUND)
    version, _, payload = sealed.partition(".")
    flipped = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1]
    with pytest.raises(UnopenedKeys, match="do not open"):
        open_texts(SECRET, f"{version}.{flipped}", **BOUND)
    for bad, says in (("v9.abc", "'v9'"), ("v1.%%%", "base64url"), ("v1.AAAA", "too short")):
        with pytest.raises(UnopenedKeys, match=says):
            open_texts(SECRET, bad, **BOUND)


def events(site: Site, key: str, *, secret: str | None = None) -> Any:
    """boto3's `events` client for `site`, signing SigV4 with `key` (its id, the whole key)."""
    return boto3.client(
        "events",
        endpoint_url=site.url,
        region_name="eu-central-1",
        aws_access_key_id=parse_key(key).key_id,
        aws_secret_access_key=secret or key,
        config=Config(retries={"max_attempts": 1}),
    )


def put_one(site: Site, key: str, n: int) -> str:
    """PutEvents of one entry to `site` signed with `key`: the event id, else the error code."""
    entry = {"Source": "shop", "DetailType": "Order Placed", "Detail": json.dumps({"n": n})}
    try:
        answer = events(site, key).put_events(Entries=[entry])
    except ClientError as exc:
        return str(exc.response["Error"]["Code"])
    assert answer["FailedEntryCount"] == 0, answer
    return str(answer["Entries"][0]["EventId"])


def signs(code_or_id: str) -> bool:
    return not code_or_id.endswith("Exception")


@pytest.mark.slow
def test_a_key_made_on_a_signs_sigv4_on_b_after_a_is_killed_and_revocation_follows(
    tmp_path: Path,
) -> None:
    with two_sites(tmp_path) as (a, b):
        kept = pair(a, b)
        gone = b if kept is a else a
        assert kept.first is not None
        # The kept site's first keys, made by its first start, sign on the site that gave way.
        first_admin = kept.first.admin_key
        listed = wait_until(
            lambda: events(gone, first_admin).list_event_buses(),
            what="the kept site's first admin key to sign on the site that gave way",
            ignoring=ClientError,  # it shows the pairing settled just before it takes the keys
        )
        assert "default" in [bus["Name"] for bus in listed["EventBuses"]]

        old = a.api("POST", "/v1/keys", json={"scope": "ingest", "description": "old"}).json()
        wait_until(
            lambda: put_one(b, old["key"], 1),
            what="a's new key to sign SigV4 on b",
            accept=signs,
        )
        # Rotation on a: a new key, the old one revoked; both follow on b.
        new = a.api("POST", "/v1/keys", json={"scope": "ingest", "description": "new"}).json()
        assert a.api("DELETE", f"/v1/keys/{old['id']}").status_code in (200, 204)
        wait_until(
            lambda: put_one(b, new["key"], 2),
            what="the rotated-in key to sign on b",
            accept=signs,
        )
        wait_until(
            lambda: put_one(b, old["key"], 3),
            what="the key revoked on a to be refused on b",
            accept=lambda code: code == "UnrecognizedClientException",
        )

        a.server.terminate(signal.SIGKILL)
        a.server.process.wait(timeout=30)
        event_id = put_one(b, new["key"], 4)
        assert signs(event_id), event_id
        assert b.events("default", 1_000, until=event_id)[-1]["id"] == event_id
        assert put_one(b, old["key"], 5) == "UnrecognizedClientException"
        with pytest.raises(ClientError) as wrong:
            events(b, new["key"], secret="swk_not_the_key").put_events(
                Entries=[{"Source": "s", "DetailType": "t", "Detail": "{}"}]
            )
        assert wrong.value.response["Error"]["Code"] == "InvalidSignatureException"

        # At rest on b the key is sealed under b's secret key, as b seals its own keys; no
        # answer and no log line of either site shows a key's text.
        with sqlite3.connect(b.server.data_dir / "control.db") as db:
            (sealed,) = db.execute(
                "SELECT sealed_key FROM api_keys WHERE id = ?", (new["id"],)
            ).fetchone()
        assert sealed.startswith("swk1.")
        assert new["key"] not in sealed
        for text in (b.api("GET", "/v1/keys").text, b.api("GET", "/v1/peers/a").text):
            assert new["key"] not in text
            assert parse_key(new["key"]).secret not in text
        for site in (a, b):
            output = site.server.output()
            assert parse_key(new["key"]).secret not in output
            assert SECRET not in output

"""Standard Webhooks signatures during a secret rotation, checked by the `standardwebhooks`
library receivers use: both secrets verify within the grace period, only the new one after it."""

from __future__ import annotations

import time

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from stellwerk.delivery.targets import RetiringSecret, WebhookSigner, generate_secret

BODY = b'{"specversion":"1.0","id":"e-1","source":"urn:t","type":"t"}'


def test_within_the_grace_period_a_receiver_with_either_secret_verifies() -> None:
    old, new = generate_secret(), generate_secret()
    now = int(time.time())
    signer = WebhookSigner(new, RetiringSecret(old, until=now + 60))
    headers = signer.headers("e-1", now, BODY)
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert Webhook(new).verify(BODY, headers)["id"] == "e-1"
    assert Webhook(old).verify(BODY, headers)["id"] == "e-1"
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(BODY, headers)


def test_after_the_grace_period_only_the_new_secret_verifies() -> None:
    old, new = generate_secret(), generate_secret()
    now = int(time.time())
    signer = WebhookSigner(new, RetiringSecret(old, until=now + 10))
    # A message stamped at or after the end of the grace period (within the receiver's
    # five-minute tolerance, so that only the signature can fail).
    for stamped in (now + 10, now + 20):
        headers = signer.headers("e-1", stamped, BODY)
        assert " " not in headers["webhook-signature"]
        assert Webhook(new).verify(BODY, headers)["id"] == "e-1"
        with pytest.raises(WebhookVerificationError):
            Webhook(old).verify(BODY, headers)


def test_the_retiring_secret_is_checked_and_never_shown() -> None:
    retiring = RetiringSecret(generate_secret(), until=time.time())
    assert retiring.secret not in repr(retiring)
    with pytest.raises(ValueError, match="previous_secret"):
        WebhookSigner(generate_secret(), RetiringSecret("whsec_c2hvcnQ=", until=time.time()))

"""Peer request signatures: what they bind, and how a wrong one is told apart."""

from __future__ import annotations

import pytest

from stellwerk.sites import BadSignature, signed_headers, verify

SECRET = "pair-secret-0123456789abcdef"
NOW = 1_800_000_000


def signed(**changes: object) -> dict[str, str]:
    fields: dict[str, object] = {
        "site": "a",
        "tenant": "default",
        "timestamp": NOW,
        "method": "POST",
        "path": "/v1/peers/a/events",
        "body": b"{}",
    }
    fields.update(changes)
    return signed_headers(SECRET, **fields)  # type: ignore[arg-type]


def check(
    headers: dict[str, str],
    *,
    path: str = "/v1/peers/a/events",
    body: bytes = b"{}",
    now: float = NOW,
) -> None:
    verify(SECRET, headers, method="POST", path=path, body=body, now=now)


def test_a_request_signed_with_the_pairs_secret_passes() -> None:
    check(signed())


@pytest.mark.parametrize(
    ("headers", "path", "body", "reason"),
    [
        (signed(), "/v1/peers/a/events", b'{"x":1}', "does not match"),
        (signed(), "/v1/peers/c/events", b"{}", "does not match"),
        ({**signed(), "stellwerk-tenant": "other"}, "/v1/peers/a/events", b"{}", "does not match"),
        (signed(timestamp=NOW - 301), "/v1/peers/a/events", b"{}", "from this site's clock"),
        ({**signed(), "stellwerk-timestamp": "soon"}, "/v1/peers/a/events", b"{}", "not a number"),
        ({"stellwerk-site": "a"}, "/v1/peers/a/events", b"{}", "no stellwerk-site or"),
    ],
)
def test_a_request_changed_in_anything_it_binds_is_refused_saying_why(
    headers: dict[str, str], path: str, body: bytes, reason: str
) -> None:
    with pytest.raises(BadSignature, match=reason) as caught:
        check(headers, path=path, body=body)
    assert SECRET not in str(caught.value)


def test_a_signature_made_with_another_secret_is_refused() -> None:
    other = signed_headers(
        "another-secret-0123456789",
        site="a",
        tenant="default",
        timestamp=NOW,
        method="POST",
        path="/v1/peers/a/events",
        body=b"{}",
    )
    with pytest.raises(BadSignature, match="does not match"):
        check(other)

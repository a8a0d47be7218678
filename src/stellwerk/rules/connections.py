"""Connections as saved: reusable authorization for HTTP targets, with their secrets sealed.

A connection is a spec (basic, API key, OAuth client credentials). Its secret fields are
encrypted at rest (`seal_connection` / `open_connection`) and never shown again
(`public_view`). The save-time checks that need the SSRF guard (`parse_connection`) and the
authorization built from a spec at delivery time are the delivery targets'.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal

import msgspec

from stellwerk.rules.errors import InvalidConnectionError
from stellwerk.secrets import SecretBox


class BasicAuthSpec(msgspec.Struct, frozen=True, tag="basic", tag_field="type",
                    forbid_unknown_fields=True):  # fmt: skip
    username: str
    password: str


class ApiKeySpec(msgspec.Struct, frozen=True, tag="api_key", tag_field="type",
                 forbid_unknown_fields=True):  # fmt: skip
    header: str
    value: str


class OAuthClientCredentialsSpec(msgspec.Struct, frozen=True, tag="oauth_client_credentials",
                                 tag_field="type", forbid_unknown_fields=True):  # fmt: skip
    """RFC 6749 section 4.4; `client_auth` says how the client authenticates to `token_url`:
    HTTP basic (`basic`, the RFC's recommendation) or `client_id`/`client_secret` form fields."""

    token_url: str
    client_id: str
    client_secret: str
    scope: str | None = None
    extra_params: dict[str, str] = msgspec.field(default_factory=dict)
    client_auth: Literal["basic", "body"] = "basic"


ConnectionSpec = BasicAuthSpec | ApiKeySpec | OAuthClientCredentialsSpec

SECRET_FIELDS: Final[dict[type[ConnectionSpec], tuple[str, ...]]] = {
    BasicAuthSpec: ("password",),
    ApiKeySpec: ("value",),
    OAuthClientCredentialsSpec: ("client_secret",),
}

_KINDS: Final[dict[str, type[ConnectionSpec]]] = {
    "basic": BasicAuthSpec,
    "api_key": ApiKeySpec,
    "oauth_client_credentials": OAuthClientCredentialsSpec,
}


def seal_connection(spec: ConnectionSpec, box: SecretBox, associated: str = "") -> dict[str, Any]:
    """The spec as stored: a JSON object whose secret fields are `box`-encrypted tokens.

    `associated` binds the ciphertexts to their row (say `tenant/connection-name`), so a token
    copied into another connection's row does not decrypt there.
    """
    stored: dict[str, Any] = msgspec.to_builtins(spec)
    for field in SECRET_FIELDS[type(spec)]:
        stored[field] = box.encrypt(stored[field], associated)
    return stored


def open_connection(
    stored: Mapping[str, Any], box: SecretBox, associated: str = ""
) -> ConnectionSpec:
    """The spec from `seal_connection`'s form; `DecryptionError` on a wrong key or tampering."""
    plain = dict(stored)
    kind = _KINDS.get(str(plain.get("type")))
    if kind is None:
        raise InvalidConnectionError(
            "type", f"stored connection has unknown type {plain.get('type')!r}"
        )
    for field in SECRET_FIELDS[kind]:
        plain[field] = box.decrypt(str(plain[field]), associated)
    result: ConnectionSpec = msgspec.convert(plain, type=ConnectionSpec)
    return result


def public_view(spec: ConnectionSpec) -> dict[str, Any]:
    """The spec as `GET` shows it: everything but the secrets, which are never shown again."""
    view: dict[str, Any] = msgspec.to_builtins(spec)
    for field in SECRET_FIELDS[type(spec)]:
        del view[field]
    return view

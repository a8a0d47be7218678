"""Connections as saved: reusable authorization for HTTP targets, with their secrets sealed.

A connection is a spec (basic, API key in a header or in the query, OAuth client
credentials). Its secret fields are
encrypted at rest (`seal_connection` / `open_connection`) and never shown again
(`public_view`). The save-time checks that need the SSRF guard (`parse_connection`) and the
authorization built from a spec at delivery time are the delivery targets'.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal

import msgspec

from stellwerk.rules.errors import InvalidConnectionError
from stellwerk.secrets import SecretBox
from stellwerk.urls import PublicUrl


def _documented(**schema: Any) -> msgspec.Meta:
    """A field's rule for the API's document; `parse_connection` checks it (400 naming it)."""
    return msgspec.Meta(extra_json_schema=schema)


def _any_case(word: str) -> str:
    # Reserved names are letters and dashes; a dash needs no escape outside a class.
    return "".join(f"[{c.upper()}{c}]" if c.isalpha() else c for c in word)


# Headers the target sets itself; a connection overriding them would break signing or framing.
RESERVED_HEADERS: Final = frozenset(
    {"host", "content-type", "content-length", "transfer-encoding", "connection",
     "webhook-id", "webhook-timestamp", "webhook-signature"}
)  # fmt: skip
HEADER_NAME_PATTERN: Final = r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$"  # an RFC 9110 token
QUERY_PARAMETER_PATTERN: Final = r"^[A-Za-z0-9._~-]{1,128}$"  # unreserved: no escaping needed
_LINE: Final = _documented(pattern=r"^[^\r\n]+$")  # non-empty, no line break
_HEADER: Final = _documented(
    pattern=HEADER_NAME_PATTERN,
    # Header names are case-insensitive; JSON Schema's patterns are not.
    **{"not": {"pattern": f"^(?:{'|'.join(_any_case(h) for h in sorted(RESERVED_HEADERS))})$"}},
)
# A header name a user may set (a connection's API key, a target's `http_parameters`): a token,
# none of the target's own (documented here, checked by those who take one).
HeaderName = Annotated[str, _HEADER]
_HEADER_VALUE: Final = _documented(pattern=r"^[^\x00-\x08\x0a-\x1f\x7f]+$")
OAUTH_OWN_PARAMS: Final = ("grant_type", "client_id", "client_secret", "scope")


class BasicAuthSpec(msgspec.Struct, frozen=True, tag="basic", tag_field="type",
                    forbid_unknown_fields=True):  # fmt: skip
    username: Annotated[str, _documented(pattern=r"^[^:\r\n]+$")]
    password: Annotated[str, _LINE]


class ApiKeySpec(msgspec.Struct, frozen=True, tag="api_key", tag_field="type",
                 forbid_unknown_fields=True):  # fmt: skip
    header: HeaderName
    value: Annotated[str, _HEADER_VALUE]


class ApiKeyQuerySpec(msgspec.Struct, frozen=True, tag="api_key_query", tag_field="type",
                      forbid_unknown_fields=True):  # fmt: skip
    """A key that a service takes only in the URL's query (GA4's `api_secret`, Meta's
    `access_token`): added as `parameter=value` to the target's URL when a request is sent, so
    it is sealed here rather than written into a rule's URL for every reader of the rule."""

    parameter: Annotated[str, _documented(pattern=QUERY_PARAMETER_PATTERN)]
    value: Annotated[str, _LINE]


class OAuthClientCredentialsSpec(msgspec.Struct, frozen=True, tag="oauth_client_credentials",
                                 tag_field="type", forbid_unknown_fields=True):  # fmt: skip
    """RFC 6749 section 4.4; `client_auth` says how the client authenticates to `token_url`:
    HTTP basic (`basic`, the RFC's recommendation) or `client_id`/`client_secret` form fields."""

    token_url: PublicUrl
    client_id: Annotated[str, _LINE]
    client_secret: Annotated[str, _LINE]
    scope: str | None = None
    extra_params: Annotated[
        dict[str, str], _documented(propertyNames={"not": {"enum": list(OAUTH_OWN_PARAMS)}})
    ] = msgspec.field(default_factory=dict)
    client_auth: Literal["basic", "body"] = "basic"


ConnectionSpec = BasicAuthSpec | ApiKeySpec | ApiKeyQuerySpec | OAuthClientCredentialsSpec

SECRET_FIELDS: Final[dict[type[ConnectionSpec], tuple[str, ...]]] = {
    BasicAuthSpec: ("password",),
    ApiKeySpec: ("value",),
    ApiKeyQuerySpec: ("value",),
    OAuthClientCredentialsSpec: ("client_secret",),
}

_KINDS: Final[dict[str, type[ConnectionSpec]]] = {
    "basic": BasicAuthSpec,
    "api_key": ApiKeySpec,
    "api_key_query": ApiKeyQuerySpec,
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

"""Delivery targets, where matched events go (`http`, `function`, `log`), and their guards.

Every target implements `stellwerk.delivery.model.Target`: `deliver` maps every problem onto an
outcome instead of raising. Save-time checks raise the `TargetConfigError` family instead.
"""

from stellwerk.delivery.targets.connections import (
    ApiKeySpec,
    AuthError,
    BasicAuthSpec,
    ConnectionAuth,
    ConnectionSpec,
    OAuthClientCredentials,
    OAuthClientCredentialsSpec,
    StaticAuth,
    build_auth,
    open_connection,
    parse_connection,
    public_view,
    seal_connection,
)
from stellwerk.delivery.targets.errors import (
    InvalidConnectionError,
    InvalidTargetError,
    TargetConfigError,
    UnsafeTargetError,
)
from stellwerk.delivery.targets.function import FunctionTarget, resolve_function
from stellwerk.delivery.targets.http import HttpTarget
from stellwerk.delivery.targets.log import LogTarget
from stellwerk.delivery.targets.session import SessionPool
from stellwerk.delivery.targets.ssrf import AddressPolicy, GuardedResolver, check_target_url
from stellwerk.delivery.targets.webhooks import WebhookSigner, generate_secret, parse_secret

__all__ = [
    "AddressPolicy",
    "ApiKeySpec",
    "AuthError",
    "BasicAuthSpec",
    "ConnectionAuth",
    "ConnectionSpec",
    "FunctionTarget",
    "GuardedResolver",
    "HttpTarget",
    "InvalidConnectionError",
    "InvalidTargetError",
    "LogTarget",
    "OAuthClientCredentials",
    "OAuthClientCredentialsSpec",
    "SessionPool",
    "StaticAuth",
    "TargetConfigError",
    "UnsafeTargetError",
    "WebhookSigner",
    "build_auth",
    "check_target_url",
    "generate_secret",
    "open_connection",
    "parse_connection",
    "parse_secret",
    "public_view",
    "resolve_function",
    "seal_connection",
]

"""Delivery targets, where matched events go (`http`, `function`, `log`), and their guards.

Every target implements `stellwerk.delivery.model.Target`: `deliver` maps every problem onto an
outcome instead of raising. Save-time checks raise `stellwerk.rules.TargetConfigError` and its kin.
"""

from stellwerk.delivery.targets.connections import (
    AuthError,
    ConnectionAuth,
    OAuthClientCredentials,
    StaticAuth,
    build_auth,
    parse_connection,
)
from stellwerk.delivery.targets.function import FunctionTarget, resolve_function
from stellwerk.delivery.targets.http import HttpTarget
from stellwerk.delivery.targets.log import LogTarget
from stellwerk.delivery.targets.session import SessionPool
from stellwerk.delivery.targets.ssrf import (
    AddressPolicy,
    GuardedResolver,
    UnsafeAddressError,
    check_target_url,
)
from stellwerk.delivery.targets.transport import HttpClient, TransferError
from stellwerk.delivery.targets.webhooks import (
    RetiringSecret,
    WebhookSigner,
    generate_secret,
    parse_secret,
)

__all__ = [
    "AddressPolicy",
    "AuthError",
    "ConnectionAuth",
    "FunctionTarget",
    "GuardedResolver",
    "HttpClient",
    "HttpTarget",
    "LogTarget",
    "OAuthClientCredentials",
    "RetiringSecret",
    "SessionPool",
    "StaticAuth",
    "TransferError",
    "UnsafeAddressError",
    "WebhookSigner",
    "build_auth",
    "check_target_url",
    "generate_secret",
    "parse_connection",
    "parse_secret",
    "resolve_function",
]

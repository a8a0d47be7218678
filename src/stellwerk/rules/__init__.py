"""Rules as a user saves them: a pattern on a bus plus up to ten targets, the connections those
targets use, and the save-time checks of both (pure model, no I/O)."""

from stellwerk.rules.connections import (
    ApiKeySpec,
    BasicAuthSpec,
    ConnectionSpec,
    OAuthClientCredentialsSpec,
    open_connection,
    public_view,
    seal_connection,
)
from stellwerk.rules.errors import (
    InvalidConnectionError,
    InvalidTargetError,
    TargetConfigError,
    UnsafeTargetError,
)
from stellwerk.rules.model import (
    MAX_EVENT_AGE_SECONDS,
    MAX_RETRY_ATTEMPTS,
    MAX_TARGETS,
    MAX_TIMEOUT_SECONDS,
    MIN_EVENT_AGE_SECONDS,
    InvalidRuleError,
    RetryPolicy,
    Rule,
    RuleInput,
    TargetSpec,
    TransformerSpec,
    compile_transformer,
    validate_rule,
)

__all__ = [
    "MAX_EVENT_AGE_SECONDS",
    "MAX_RETRY_ATTEMPTS",
    "MAX_TARGETS",
    "MAX_TIMEOUT_SECONDS",
    "MIN_EVENT_AGE_SECONDS",
    "ApiKeySpec",
    "BasicAuthSpec",
    "ConnectionSpec",
    "InvalidConnectionError",
    "InvalidRuleError",
    "InvalidTargetError",
    "OAuthClientCredentialsSpec",
    "RetryPolicy",
    "Rule",
    "RuleInput",
    "TargetConfigError",
    "TargetSpec",
    "TransformerSpec",
    "UnsafeTargetError",
    "compile_transformer",
    "open_connection",
    "public_view",
    "seal_connection",
    "validate_rule",
]

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
from stellwerk.rules.signing import (
    DEFAULT_SECRET_GRACE,
    MAX_SECRET_GRACE,
    carry_secrets,
    rotated_target,
    rule_input,
)

__all__ = [
    "DEFAULT_SECRET_GRACE",
    "MAX_EVENT_AGE_SECONDS",
    "MAX_RETRY_ATTEMPTS",
    "MAX_SECRET_GRACE",
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
    "carry_secrets",
    "compile_transformer",
    "open_connection",
    "public_view",
    "rotated_target",
    "rule_input",
    "seal_connection",
    "validate_rule",
]

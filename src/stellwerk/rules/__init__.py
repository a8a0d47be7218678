"""Rules: a pattern on a bus plus up to ten targets (pure model and save-time validation)."""

from stellwerk.rules.model import (
    MAX_TARGETS,
    InvalidRuleError,
    Rule,
    RuleInput,
    TargetSpec,
    TransformerSpec,
    validate_rule,
)

__all__ = [
    "MAX_TARGETS",
    "InvalidRuleError",
    "Rule",
    "RuleInput",
    "TargetSpec",
    "TransformerSpec",
    "validate_rule",
]

"""Input transformation: what a target receives, shaped from the event (EventBridge compatible)."""

from stellwerk.transform.errors import InvalidTransformerError
from stellwerk.transform.paths import is_missing, parse_path, resolve
from stellwerk.transform.transformer import BUILTINS, MAX_VARIABLES, InputTransformer

__all__ = [
    "BUILTINS",
    "MAX_VARIABLES",
    "InputTransformer",
    "InvalidTransformerError",
    "is_missing",
    "parse_path",
    "resolve",
]

"""Logging set-up of a Stellwerk process: one structured format for structlog and stdlib loggers.

`configure_logging()` makes every log line of the process (Stellwerk's own structlog loggers and
stdlib loggers such as uvicorn's, alembic's and SQLAlchemy's) go through one handler on the root
logger, rendered as JSON lines when stderr is not a terminal and as readable console lines when it
is. Values whose key names a secret (API keys, passwords, tokens, the Authorization header) are
replaced before rendering, as are bearer tokens and URL passwords found inside any string.

Stellwerk code logs with `structlog.stdlib.get_logger(__name__)` and key-value pairs. uvicorn must
be started with `log_config=None`, otherwise it installs its own handlers after this runs.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = ["REDACTED", "configure_logging", "is_secret_name", "redact", "redact_secrets"]

REDACTED = "[REDACTED]"

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

# Loggers that libraries configure with handlers of their own; they must hand their records to the
# root handler instead so that the process prints one format.
_LIBRARY_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "alembic", "sqlalchemy")

_SECRET_NAMES = frozenset(
    {
        "key",
        "apikey",
        "secret",
        "password",
        "passwd",
        "passphrase",
        "token",
        "authorization",
        "proxy_authorization",
        "cookie",
        "set_cookie",
        "credentials",
        "signature",
        "webhook_signature",
    }
)
_SECRET_SUFFIXES = ("_key", "_secret", "_password", "_token", "_credentials")
# Names that end like a secret but identify or locate something instead.
_NOT_SECRET_NAMES = frozenset(
    {"cache_key", "idempotency_key", "partition_key", "routing_key", "sort_key", "primary_key"}
)

_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@\s/]+@")
# Stellwerk's own keys (`swk_<id>_<secret>`) and Standard Webhooks secrets (`whsec_...`), which
# may turn up in a string without a "Bearer" before them.
_OWN_SECRETS = re.compile(r"\b(swk|whsec)_[A-Za-z0-9+/=_-]{8,}")

# Deep enough for headers inside a request inside an event, shallow enough to stop on cycles.
_MAX_DEPTH = 6


def is_secret_name(name: str | bytes) -> bool:
    """Whether a key, field or header name says its value is a secret."""
    if isinstance(name, bytes):
        name = name.decode("latin-1")
    normal = name.strip().lower().replace("-", "_")
    if normal in _NOT_SECRET_NAMES:
        return False
    return normal in _SECRET_NAMES or normal.endswith(_SECRET_SUFFIXES)


def _redact_string(value: str) -> str:
    if "://" in value:
        value = _URL_PASSWORD.sub(rf"\g<1>{REDACTED}@", value)
    value = _BEARER.sub(rf"\g<1> {REDACTED}", value)
    if "_" in value:
        value = _OWN_SECRETS.sub(rf"\g<1>_{REDACTED}", value)
    return value


def redact(value: Any) -> Any:
    """A copy of `value` (text, or mappings and lists of them) with secrets replaced, as the
    log shows it: values under secret names, bearer tokens, URL passwords, Stellwerk keys."""
    return _redact(value, 0)


def _redact(value: Any, depth: int) -> Any:
    """A copy of `value` with secrets replaced; the caller's objects are never changed."""
    if isinstance(value, str):
        return _redact_string(value)
    if isinstance(value, bytes):
        text = value.decode("latin-1")
        redacted = _redact_string(text)
        return value if redacted == text else redacted
    if depth >= _MAX_DEPTH:
        return value
    if isinstance(value, Mapping):
        return {
            k: REDACTED
            if isinstance(k, str | bytes) and is_secret_name(k) and v is not None
            else _redact(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        if (
            isinstance(value, tuple)
            and len(value) == 2
            and isinstance(value[0], str | bytes)
            and is_secret_name(value[0])
            and value[1] is not None
        ):
            # A header pair as ASGI and httpx carry them: (name, value).
            items: list[Any] = [value[0], REDACTED]
        else:
            items = [_redact(item, depth + 1) for item in value]
        return items if isinstance(value, list) else tuple(items)
    return value


def redact_secrets(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: replaces secret values anywhere in the event dict."""
    for name, value in event_dict.items():
        if value is None:
            continue
        if is_secret_name(name):
            event_dict[name] = REDACTED
        elif isinstance(value, str | bytes | Mapping | list | tuple):
            event_dict[name] = _redact(value, 0)
    return event_dict


_LEADING_KEYS = ("timestamp", "level", "logger", "event")


def _leading_keys_first(
    logger: WrappedLogger, method_name: str, event_dict: EventDict
) -> EventDict:
    """Puts the fields every line has in front, so JSON lines read well in a plain `tail -f`."""
    ordered = {key: event_dict.pop(key) for key in _LEADING_KEYS if key in event_dict}
    ordered.update(event_dict)
    return ordered


class _StellwerkHandler(logging.StreamHandler[TextIO]):
    """The root handler installed by `configure_logging`, marked so a second call replaces it."""


def configure_logging(
    level: str = "info",
    fmt: Literal["auto", "json", "console"] = "auto",
    *,
    stream: TextIO | None = None,
) -> None:
    """Routes all logging of the process through structlog's formatting.

    `level` is a level name (`debug`, `info`, `warning`, `error`, `critical`). `fmt="auto"` picks
    the console format when `stream` is a terminal and JSON lines otherwise. `stream` defaults to
    the current `sys.stderr`. Calling it again replaces the previous configuration.
    """
    numeric_level = _LEVELS.get(level.strip().lower())
    if numeric_level is None:
        choices = ", ".join(name for name in _LEVELS if name != "warn")
        raise ValueError(f"unknown log level {level!r}, expected one of {choices}")
    if fmt not in ("auto", "json", "console"):
        raise ValueError(f"unknown log format {fmt!r}, expected auto, json or console")
    if stream is None:
        stream = sys.stderr
    tty = _is_terminal(stream)
    if fmt == "auto":
        fmt = "console" if tty else "json"

    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    # Applied to stdlib records only; structlog's own events get the same fields in `configure`.
    foreign_pre_chain: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        timestamper,
    ]
    renderers: list[Processor] = (
        [_leading_keys_first, structlog.processors.JSONRenderer()]
        if fmt == "json"
        else [structlog.dev.ConsoleRenderer(colors=tty)]
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=foreign_pre_chain,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # Tracebacks become text before redaction in both formats, so a secret in an exception
            # message is caught and no renderer ever prints local variables.
            structlog.processors.format_exc_info,
            redact_secrets,
            *renderers,
        ],
    )

    handler = _StellwerkHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StellwerkHandler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(numeric_level)

    for name in _LIBRARY_LOGGERS:
        library_logger = logging.getLogger(name)
        library_logger.handlers.clear()
        library_logger.propagate = True
        library_logger.setLevel(logging.NOTSET)
    # SQLAlchemy echoes every statement at INFO; that is a debugging aid, not an operations log.
    logging.getLogger("sqlalchemy").setLevel(max(numeric_level, logging.WARNING))
    # Alembic says at INFO which plugins it set up and which migration ran, a dozen lines at
    # every start; Stellwerk logs one line of its own when a migration ran (`storage.control.
    # migrate`), and Alembic's own lines appear at the debug level.
    logging.getLogger("alembic").setLevel(
        logging.DEBUG if numeric_level <= logging.DEBUG else max(numeric_level, logging.WARNING)
    )

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.add_log_level,
            structlog.stdlib.PositionalArgumentsFormatter(),
            timestamper,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Safe to cache: the level is checked on the stdlib logger at each call and the rendering
        # lives in the handler, so a later call still takes effect for cached loggers.
        cache_logger_on_first_use=True,
    )


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False

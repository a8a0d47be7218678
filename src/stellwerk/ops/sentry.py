"""Error tracking (`--sentry-dsn`): the process's errors go to Sentry, scrubbed.

What is sent is chosen, not filtered afterwards: every line logged at error level (a request
that failed, a duty that crashed, a store out of reach at start, a backup that failed) becomes
one Sentry event, with its exception and stack when it has one, the release and the process's
role, and only the log fields named in `CONTEXT`. Nothing else of the log line goes, no request
(body, headers, cookies), no local variables of the stack's frames, no breadcrumbs. On the way
out, every string is redacted as the log redacts it (secret-named fields, bearer tokens, URL
passwords, `swk_` keys and `whsec_` secrets). So keys, secrets, authorization headers and
event payloads stay home.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any, Final

from stellwerk import __version__
from stellwerk.ops.logging import REDACTED, is_secret_name, redact

# Log fields that say where an error happened and carry no data of a user's.
CONTEXT: Final = frozenset(
    {"method", "route", "path", "tenant", "bus", "rule", "target", "delivery", "role", "error"}
)
_MAX_TEXT: Final = 2000


def release() -> str:
    return f"stellwerk@{__version__}"


def start_error_tracking(dsn: str, role: str) -> None:
    """Send this process's errors to Sentry; `role` tags each event (gateway, router, ...)."""
    import sentry_sdk
    from sentry_sdk.integrations.atexit import AtexitIntegration
    from sentry_sdk.integrations.dedupe import DedupeIntegration
    from sentry_sdk.integrations.excepthook import ExcepthookIntegration
    from sentry_sdk.integrations.threading import ThreadingIntegration

    sentry_sdk.init(
        dsn=dsn,
        release=release(),
        # Chosen one by one: the defaults would add the command line (which may hold a DSN or a
        # database URL with its password) and patch HTTP clients for breadcrumbs.
        default_integrations=False,
        auto_enabling_integrations=False,
        integrations=[
            ExcepthookIntegration(),
            ThreadingIntegration(),
            DedupeIntegration(),
            AtexitIntegration(callback=lambda pending, timeout: None),
        ],
        send_default_pii=False,
        include_local_variables=False,
        include_source_context=False,
        max_request_body_size="never",
        max_breadcrumbs=0,
        before_send=scrub_event,
        before_breadcrumb=lambda crumb, hint: None,
    )
    sentry_sdk.set_tag("role", role)
    logging.getLogger().addHandler(SentryHandler())


class SentryHandler(logging.Handler):
    """Sends each record at error level or above as one Sentry event (see the module doc)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)

    def emit(self, record: logging.LogRecord) -> None:
        import sentry_sdk

        fields = record.msg if isinstance(record.msg, Mapping) else {}
        title = str(fields.get("event", "")) if fields else record.getMessage()
        context = {k: str(v)[:_MAX_TEXT] for k, v in fields.items() if k in CONTEXT}
        error = _exception(record, fields)
        with sentry_sdk.new_scope() as scope:
            scope.set_tag("logger", record.name)
            scope.set_context("log", {"event": title, **context})
            if error is not None:
                sentry_sdk.capture_exception(error)
            else:
                sentry_sdk.capture_message(title, level="error")


def _exception(record: logging.LogRecord, fields: Mapping[str, Any]) -> BaseException | None:
    """The record's exception: stdlib's `exc_info`, or structlog's `exc_info` field (an
    exception, or True inside an `except` block, as `log.exception` gives it)."""
    if record.exc_info and record.exc_info[1] is not None:
        return record.exc_info[1]
    given = fields.get("exc_info")
    if isinstance(given, BaseException):
        return given
    if isinstance(given, tuple) and len(given) == 3 and isinstance(given[1], BaseException):
        return given[1]
    if given is True:
        return sys.exc_info()[1]
    return None


def scrub_event(event: Any, hint: Any) -> Any:
    """The last check before an event leaves: no request, no frame variables, nothing outside
    the chosen parts, every string redacted."""
    for dropped in ("request", "breadcrumbs", "user", "modules", "extra_argv"):
        event.pop(dropped, None)
    for exception in event.get("exception", {}).get("values", []):
        frames = (exception.get("stacktrace") or {}).get("frames", [])
        for frame in frames:
            for key in ("vars", "pre_context", "context_line", "post_context"):
                frame.pop(key, None)
        if isinstance(exception.get("value"), str):
            exception["value"] = exception["value"][:_MAX_TEXT]
    return redact_deep(event)


def redact_deep(value: Any) -> Any:
    """`redact` at any depth (the log's own stops at a few levels)."""
    if isinstance(value, Mapping):
        return {
            k: REDACTED
            if isinstance(k, str) and is_secret_name(k) and v is not None
            else redact_deep(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_deep(item) for item in value]
    return redact(value)

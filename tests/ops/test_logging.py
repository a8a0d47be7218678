"""configure_logging: one format for structlog and stdlib loggers, with secrets redacted."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog

from stellwerk.ops.logging import REDACTED, configure_logging, is_secret_name


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Logging is process-global: put back what the test runner had, so other tests see it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    libraries = {
        name: (list(lib.handlers), lib.propagate, lib.level)
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "alembic", "sqlalchemy")
        for lib in [logging.getLogger(name)]
    }
    structlog_config = structlog.get_config()
    yield
    for name, (lib_handlers, propagate, lib_level) in libraries.items():
        lib = logging.getLogger(name)
        lib.handlers[:] = lib_handlers
        lib.propagate = propagate
        lib.setLevel(lib_level)
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    structlog.configure(**structlog_config)
    structlog.contextvars.clear_contextvars()


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_timestamp_level_event_logger_and_context() -> None:
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    structlog.contextvars.bind_contextvars(request_id="req-1")

    structlog.stdlib.get_logger("stellwerk.tenancy").info(
        "bus created", tenant="acme", bus="orders"
    )

    (line,) = json_lines(out)
    assert list(line)[:4] == ["timestamp", "level", "logger", "event"]
    assert line["event"] == "bus created"
    assert line["level"] == "info"
    assert line["logger"] == "stellwerk.tenancy"
    assert (line["tenant"], line["bus"], line["request_id"]) == ("acme", "orders", "req-1")
    timestamp = datetime.fromisoformat(line["timestamp"])
    assert timestamp.utcoffset() == UTC.utcoffset(None)
    assert abs((datetime.now(UTC) - timestamp).total_seconds()) < 3600


def test_stdlib_loggers_use_the_same_format_and_lose_their_own_handlers() -> None:
    uvicorn_own = io.StringIO()
    # What uvicorn's default log config does when it starts.
    logging.getLogger("uvicorn.error").addHandler(logging.StreamHandler(uvicorn_own))
    logging.getLogger("uvicorn.error").propagate = False
    out = io.StringIO()
    configure_logging("info", "json", stream=out)

    logging.getLogger("uvicorn.error").info("Started server process [%d]", 4242)
    # Alembic's own lines pass at warning (its info lines are quiet below debug, see below).
    logging.getLogger("alembic.runtime.migration").warning("Revision 0009 is not present")

    first, second = json_lines(out)
    assert first["event"] == "Started server process [4242]"
    assert (first["level"], first["logger"]) == ("info", "uvicorn.error")
    assert second["logger"] == "alembic.runtime.migration"
    assert "timestamp" in second
    assert uvicorn_own.getvalue() == ""


def test_secret_values_are_redacted_everywhere() -> None:
    out = io.StringIO()
    configure_logging("debug", "json", stream=out)
    headers = {"Authorization": "Bearer sk-header-1", "content-type": "application/json"}

    structlog.stdlib.get_logger("stellwerk.auth").info(
        "key created",
        key="swk_live_0001",
        ingest_key="swk_live_0002",
        client_secret="cs-0003",
        password="pw-0004",
        headers=headers,
        asgi_headers=[(b"authorization", b"Bearer sk-asgi-5"), (b"host", b"stellwerk.test")],
        database_url="postgresql+asyncpg://stellwerk:pw-0006@db.internal/stellwerk",
        note="retried with Bearer sk-note-7",
        raw_body=b"authorization: Bearer sk-body-8",
        idempotency_key="evt-42",
        key_id="key_abc",
        scopes=["ingest", "read"],
        fields=["password", "name"],
    )

    text = out.getvalue()
    for secret in ("swk_live", "cs-0003", "pw-000", "sk-header", "sk-asgi", "sk-note", "sk-body"):
        assert secret not in text
    (line,) = json_lines(out)
    assert line["key"] == line["ingest_key"] == line["password"] == REDACTED
    assert line["headers"] == {"Authorization": REDACTED, "content-type": "application/json"}
    assert line["asgi_headers"][0][1] == REDACTED
    assert "stellwerk.test" in line["asgi_headers"][1][1]
    assert line["database_url"] == (
        f"postgresql+asyncpg://stellwerk:{REDACTED}@db.internal/stellwerk"
    )
    assert line["note"] == f"retried with Bearer {REDACTED}"
    # Names that merely look like secrets, and ordinary values, survive.
    assert (line["idempotency_key"], line["key_id"]) == ("evt-42", "key_abc")
    assert line["scopes"] == ["ingest", "read"]
    assert line["fields"] == ["password", "name"]
    # The caller's own objects are left alone.
    assert headers["Authorization"] == "Bearer sk-header-1"


def test_secrets_in_exceptions_and_stdlib_arguments_are_redacted() -> None:
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    log = logging.getLogger("stellwerk.delivery")

    log.warning("target answered for %s", "Bearer sk-arg-1")
    try:
        raise ConnectionError("refused: https://user:pw-2@target.example/hook")
    except ConnectionError:
        log.exception("delivery failed")

    text = out.getvalue()
    assert "sk-arg-1" not in text
    assert "pw-2" not in text
    warning, error = json_lines(out)
    assert warning["event"] == f"target answered for Bearer {REDACTED}"
    assert error["level"] == "error"
    assert "ConnectionError" in error["exception"]
    assert f"user:{REDACTED}@target.example" in error["exception"]


def test_level_filters_structlog_and_stdlib_records() -> None:
    out = io.StringIO()
    configure_logging("warning", "json", stream=out)
    log = structlog.stdlib.get_logger("stellwerk.router")

    log.info("cursor advanced")
    logging.getLogger("uvicorn.access").info("GET /livez 200")
    log.warning("target slow", target="hook")
    logging.getLogger("uvicorn.error").error("worker died")

    assert [line["event"] for line in json_lines(out)] == ["target slow", "worker died"]


def test_second_call_replaces_the_first_also_for_loggers_already_in_use() -> None:
    first, second = io.StringIO(), io.StringIO()
    log = structlog.stdlib.get_logger("stellwerk.gateway")
    configure_logging("info", "json", stream=first)
    log.info("one")

    configure_logging("warning", "json", stream=second)
    configure_logging("warning", "json", stream=second)
    log.info("dropped by the new level")
    log.warning("two")

    assert [line["event"] for line in json_lines(first)] == ["one"]
    assert [line["event"] for line in json_lines(second)] == ["two"]


def test_console_format_is_readable_and_redacted() -> None:
    out = io.StringIO()
    configure_logging("info", "console", stream=out)

    structlog.stdlib.get_logger("stellwerk.cli").info("keys created", admin_key="swk_adm_1")

    text = out.getvalue()
    assert "keys created" in text
    assert f"admin_key={REDACTED}" in text
    assert "swk_adm_1" not in text
    assert "\x1b[" not in text  # no colours when the stream is not a terminal
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_auto_picks_json_for_a_pipe_and_console_for_a_terminal() -> None:
    piped = io.StringIO()
    configure_logging("info", "auto", stream=piped)
    structlog.stdlib.get_logger("stellwerk").info("to a pipe")
    assert json_lines(piped)[0]["event"] == "to a pipe"

    controller, terminal_fd = os.openpty()
    with open(terminal_fd, "w", encoding="utf-8") as terminal:
        configure_logging("info", "auto", stream=terminal)
        structlog.stdlib.get_logger("stellwerk").info("to a terminal")
        terminal.flush()
        written = os.read(controller, 65536).decode()
        # Close the handler before the terminal so nothing writes to a closed file later.
        configure_logging("info", "json", stream=io.StringIO())
    os.close(controller)
    assert "to a terminal" in written
    assert not written.lstrip().startswith("{")


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("key", True),
        ("X-Api-Key", True),
        (b"authorization", True),
        ("webhook_secret", True),
        ("refresh_token", True),
        ("DB_PASSWORD", True),
        ("idempotency_key", False),
        ("key_id", False),
        ("keys_created", False),
        ("tenant", False),
        ("monkey", False),
    ],
)
def test_secret_names(name: str | bytes, secret: bool) -> None:
    assert is_secret_name(name) is secret


def test_bad_level_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown log level 'loud'.*debug, info"):
        configure_logging("loud")


async def test_migrations_say_one_line_at_info_and_alembic_speaks_at_debug(tmp_path: Any) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    from stellwerk.storage.control.migrate import head_revision, upgrade

    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'info.db'}")
    try:
        await upgrade(engine)
        await upgrade(engine)  # nothing to do: nothing said
    finally:
        await engine.dispose()
    lines = json_lines(out)
    assert [line["logger"] for line in lines] == ["stellwerk.control"], lines
    assert lines[0]["event"] == "control plane migrated"
    assert (lines[0]["old"], lines[0]["new"]) == (None, head_revision())

    out = io.StringIO()
    configure_logging("debug", "json", stream=out)
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'debug.db'}")
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()
    assert any(
        line["logger"].startswith("alembic") and "Running upgrade" in line["event"]
        for line in json_lines(out)
    )

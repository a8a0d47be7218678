"""The configuration of a Stellwerk process, validated in one place.

Every setting is a flag of `stellwerk serve` with a `STELLWERK_<FLAG>` environment equivalent.
Values arrive as text (from either source) and are checked here, so a bad value is reported once,
in one line that names the flag, the variable and the reason, before anything starts.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import timedelta
from email.utils import parseaddr
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from stellwerk.cpus import usable_cpus


class Role(enum.StrEnum):
    ALL = "all"
    GATEWAY = "gateway"
    ROUTER = "router"
    DELIVERY = "delivery"
    STATUS = "status"
    SCHEDULER = "scheduler"
    # Embedded mode's second process: router, delivery and scheduler over the data directory.
    PIPELINE = "pipeline"
    # A stateless ingest proxy in front of a global endpoint's sites (`stellwerk.sites.edge`).
    EDGE = "edge"


# Embedded mode runs at most this many processes: a gateway and a pipeline. More would not help
# yet: the log has one writer and pipeline.db one pipeline (docs/operations.md, "Processes").
MAX_EMBEDDED_PROCESSES: Final = 2


class ConfigError(ValueError):
    """A setting has a value Stellwerk cannot run with."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"{flag_of(name)} ({env_of(name)}): {reason}")


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


def env_of(name: str) -> str:
    return "STELLWERK_" + name.upper()


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a process needs to know before it starts; defaults are the embedded mode."""

    data_dir: Path = Path("./stellwerk-data")
    host: str = "127.0.0.1"
    port: int = 8080
    role: Role = Role.ALL
    processes: int | None = None  # see `process_count`
    nats_url: str | None = None
    nats_namespace: str = "stellwerk"
    nats_replicas: int = 1
    database_url: str | None = None
    redis_url: str | None = None
    allow_private_targets: bool = False
    log_level: str = "info"
    log_format: str = "auto"
    max_body_bytes: int = 4 * 1024 * 1024
    max_buses_per_tenant: int = 100
    max_rules_per_bus: int = 300
    function_modules: tuple[str, ...] = ()
    drain_seconds: float = 0.0
    shutdown_timeout_seconds: float = 30.0
    # Embedded, several processes: the first wait before a child that exited is started again.
    restart_backoff_seconds: float = 0.5
    # Embedded: how many steps of `nice` the pipeline process runs below the gateway, so that
    # live acknowledgements come before replays and deliveries on the CPU (docs/replays.md).
    pipeline_nice: int = 10
    key_cache_seconds: float = 5.0
    tenant_request_rate: float = 10_000.0
    tenant_event_rate: float = 200_000.0
    max_batch_events: int = 1000
    dedup_window_seconds: float | None = None  # see `dedup_window`
    log_retention_hours: float = 168.0
    retention_interval_seconds: float = 60.0
    replay_rate: float = 50_000.0
    max_concurrent_replays: int = 2
    delivery_lease_seconds: float = 0.0  # 0: 600 embedded, 60 on JetStream
    lease_ttl_seconds: float = 15.0
    backup_dir: Path | None = None  # embedded: the scheduler takes backups into it
    backup_interval: float = 86_400.0  # seconds between scheduled backups
    backup_keep: int = 7  # scheduled backups kept; older ones are removed
    otlp_endpoint: str | None = None  # OpenTelemetry traces over OTLP/HTTP
    tls_cert: Path | None = None  # HTTPS without a proxy in front: PEM certificate (chain)
    tls_key: Path | None = None  # ... and its private key
    sentry_dsn: str | None = field(default=None, repr=False)  # errors to Sentry; has a key
    smtp_url: str | None = field(default=None, repr=False)  # status page mails; may hold a password
    smtp_from: str = "Stellwerk <stellwerk@localhost>"  # their From: header
    lake_url: str | None = None  # tracking's Parquet lake: a directory or s3://; None: <data>/lake
    geoip_db: Path | None = None  # tracking: a MaxMind-format .mmdb file for geo enrichment
    site: str = "local"  # this deployment's site name, as its peers know it (global endpoints)
    upstream: tuple[str, ...] = ()  # --role edge: the sites' base URLs, primary first
    endpoint: str | None = None  # --role edge: the global endpoint whose active site gets traffic

    @property
    def control_database_url(self) -> str:
        """The SQLAlchemy URL of the control plane: the given one, or SQLite in the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'control.db').resolve()}"

    @property
    def dedup_window(self) -> timedelta:
        """How long a repeated id+source counts as a duplicate: as set, else 24 hours embedded
        and 1 hour on JetStream, which keeps every id of the window in memory on every replica
        (about 170 bytes each: 24 hours at 1,000 events/s would be 15 GB)."""
        if self.dedup_window_seconds is not None:
            return timedelta(seconds=self.dedup_window_seconds)
        return timedelta(hours=24 if self.embedded else 1)

    @property
    def embedded(self) -> bool:
        return self.nats_url is None

    @property
    def process_count(self) -> int:
        """How many processes `serve` runs: embedded with every role, as set or one per usable
        CPU (a container's CPU limit counts), at most `MAX_EMBEDDED_PROCESSES`; otherwise one."""
        if not self.embedded or self.role is not Role.ALL:
            return 1
        wanted = self.processes or usable_cpus()
        return max(1, min(wanted, MAX_EMBEDDED_PROCESSES))


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise ValueError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise ValueError(f"{value} is outside {low}..{high}")
        return value

    return parse


def _seconds(high: float, *, low: float = 0) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text.strip())
        except ValueError:
            raise ValueError(f"{text!r} is not a number of seconds") from None
        if not low <= value <= high:
            raise ValueError(f"{value} is outside {low}..{high} seconds")
        return value

    return parse


def _hours(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text.strip())
        except ValueError:
            raise ValueError(f"{text!r} is not a number of hours") from None
        if not low <= value <= high:
            raise ValueError(f"{value} is outside {low}..{high} hours")
        return value

    return parse


def _choice(options: type[enum.StrEnum] | tuple[str, ...]) -> Callable[[str], Any]:
    allowed = tuple(str(o) for o in options)

    def parse(text: str) -> Any:
        value = text.strip().lower()
        if value not in allowed:
            raise ValueError(f"{text!r} is not one of {', '.join(allowed)}")
        return options(value) if isinstance(options, type) else value

    return parse


# The spellings a switch accepts, from the flag or its environment variable (any case); an
# empty variable counts as unset. Anything else is refused rather than guessed at.
TRUE_WORDS: tuple[str, ...] = ("true", "1", "yes", "on")
FALSE_WORDS: tuple[str, ...] = ("false", "0", "no", "off")


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS or not value:
        return False
    raise ValueError(
        f"{text!r} is not a switch value: use {', '.join(TRUE_WORDS)} to turn it on or "
        f"{', '.join(FALSE_WORDS)} to turn it off"
    )


def _url(*schemes: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip()
        parts = urlsplit(value)
        if parts.scheme not in schemes:
            raise ValueError(f"{value!r} must start with {' or '.join(s + '://' for s in schemes)}")
        if not parts.netloc and not parts.path.strip("/"):
            raise ValueError(f"{value!r} names no host or database")
        return value

    return parse


def _database_url(text: str) -> str:
    value = text.strip()
    scheme, sep, rest = value.partition("://")
    if not sep:
        raise ValueError(f"{value!r} is not a URL")
    # Users paste the URLs their tools print; map them onto the async drivers Stellwerk uses.
    aliases = {
        "postgres": "postgresql+asyncpg",
        "postgresql": "postgresql+asyncpg",
        "postgresql+asyncpg": "postgresql+asyncpg",
        "sqlite": "sqlite+aiosqlite",
        "sqlite+aiosqlite": "sqlite+aiosqlite",
    }
    if scheme not in aliases:
        raise ValueError(
            f"{value!r}: only postgresql+asyncpg:// and sqlite:// databases are supported"
        )
    if not rest.strip("/"):
        raise ValueError(f"{value!r} names no database")
    return f"{aliases[scheme]}://{rest}"


def _rate(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a number of requests per second") from None
    if not 0 <= value <= 10_000_000:
        raise ValueError(f"{value} is outside 0..10000000 (0: unlimited)")
    return value


def _modules(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    for name in names:
        if not all(piece.isidentifier() for piece in name.split(".")):
            raise ValueError(f"{name!r} is not a module name")
    return names


def _namespace(text: str) -> str:
    value = text.strip()
    if not re.fullmatch(r"[A-Za-z0-9-]{1,32}", value):
        raise ValueError(f"{value!r} must be 1 to 32 letters, digits or '-'")
    return value


def _lease_seconds(text: str) -> float:
    value = _seconds(3600)(text)
    if 0 < value < 2:
        raise ValueError(f"{value} is below 2 seconds (0: the default)")
    return value


_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
SITE_RULE: Final = "[a-z0-9][a-z0-9-]{0,63}"  # a site's name: --site, a peer's
_SITE_NAME: Final = re.compile(SITE_RULE)


def _duration(low: float, high: float) -> Callable[[str], float]:
    """Seconds, from a number of seconds or a number with a unit: 90, 90s, 30m, 6h, 1d."""

    def parse(text: str) -> float:
        value = text.strip().lower()
        unit = _UNITS.get(value[-1:], 0)
        try:
            seconds = float(value[:-1] if unit else value) * (unit or 1)
        except ValueError:
            raise ValueError(f"{text!r} is not a duration (e.g. 3600, 90s, 30m, 6h, 1d)") from None
        if not low <= seconds <= high:
            raise ValueError(f"{text.strip()} is outside {low:.0f}..{high:.0f} seconds")
        return seconds

    return parse


def _dsn(text: str) -> str:
    # Never repeated in the error: the DSN's key is a credential.
    value = text.strip()
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.username or not parts.path.strip("/"):
        raise ValueError("is not a Sentry DSN (https://KEY@HOST/PROJECT)")
    return value


def _smtp_url(text: str) -> str:
    # Never repeated in the error: the URL may carry a password.
    value = text.strip()
    parts = urlsplit(value)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ValueError("is not an SMTP URL (smtp://[user:password@]host[:port] or smtps://...)")
    try:
        parts.port  # noqa: B018 (a port out of range raises)
    except ValueError:
        raise ValueError("is not an SMTP URL: its port is not a number 1..65535") from None
    return value


def _mailbox(text: str) -> str:
    value = text.strip()
    _, address = parseaddr(value)
    if "@" not in address or any(c in value for c in "\r\n"):
        raise ValueError(f"{value!r} is not an email address ('Name <user@host>' or 'user@host')")
    return value


def check_site(text: str) -> str:
    """A site's name (`--site`, a peer's name), or ValueError saying why it is not one."""
    value = text.strip()
    if not _SITE_NAME.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a site name (1-64 of a-z, 0-9, '-', starting with a letter or digit)"
        )
    return value


def _text(text: str) -> str:
    value = text.strip()
    if not value:
        raise ValueError("must not be empty")
    return value


PARSERS: dict[str, Callable[[str], Any]] = {
    "data_dir": lambda t: Path(_text(t)),
    "host": _text,
    "port": _int_in(0, 65535),
    "role": _choice(Role),
    "processes": _int_in(1, 1024),
    "nats_url": _url("nats", "tls", "ws", "wss"),
    "nats_namespace": _namespace,
    "nats_replicas": _int_in(1, 5),
    "database_url": _database_url,
    "redis_url": _url("redis", "rediss", "unix"),
    "allow_private_targets": _bool,
    "log_level": _choice(("debug", "info", "warning", "error")),
    "log_format": _choice(("auto", "json", "console")),
    "max_body_bytes": _int_in(1024, 1024 * 1024 * 1024),
    "max_buses_per_tenant": _int_in(1, 100_000),
    "max_rules_per_bus": _int_in(1, 10_000),
    "function_modules": _modules,
    "drain_seconds": _seconds(600),
    "shutdown_timeout_seconds": _seconds(3600),
    "restart_backoff_seconds": _seconds(30, low=0.01),
    "pipeline_nice": _int_in(0, 19),
    "key_cache_seconds": _seconds(3600),
    "tenant_request_rate": _rate,
    "tenant_event_rate": _rate,
    "max_batch_events": _int_in(1, 100_000),
    "dedup_window_seconds": _seconds(30 * 86_400),
    "log_retention_hours": _hours(0.01, 24 * 3650),
    "retention_interval_seconds": _seconds(86_400, low=1),
    "replay_rate": _rate,
    "max_concurrent_replays": _int_in(1, 100),
    "delivery_lease_seconds": _lease_seconds,
    "lease_ttl_seconds": _seconds(300, low=1),
    "backup_dir": lambda t: Path(_text(t)),
    "backup_interval": _duration(60, 30 * 86_400),
    "backup_keep": _int_in(1, 1000),
    "otlp_endpoint": _url("http", "https"),
    "tls_cert": lambda t: Path(_text(t)),
    "tls_key": lambda t: Path(_text(t)),
    "sentry_dsn": _dsn,
    "smtp_url": _smtp_url,
    "smtp_from": _mailbox,
    "lake_url": _text,
    "geoip_db": lambda t: Path(_text(t)),
    "site": check_site,
    "upstream": lambda t: tuple(_url("http", "https")(u) for u in t.split(",") if u.strip()),
    "endpoint": _text,
}


def load_settings(values: Mapping[str, str | bool | int | float | Path | None]) -> Settings:
    """Build `Settings` from raw values by name; `None` means "use the default".

    Raises `ConfigError` naming the first bad setting.
    """
    known = {f.name for f in fields(Settings)}
    parsed: dict[str, Any] = {}
    for name, raw in values.items():
        if name not in known:
            raise ConfigError(name, "is not a setting")
        if raw is None:
            continue
        try:
            parsed[name] = PARSERS[name](
                str(raw) if not isinstance(raw, bool) else str(raw).lower()
            )
        except ValueError as exc:
            raise ConfigError(name, str(exc)) from None
    settings = Settings(**parsed)
    _check_combination(settings)
    return settings


def _check_combination(settings: Settings) -> None:
    _check_backups(settings)
    _check_geoip(settings)
    if (settings.processes or 1) > 1 and (not settings.embedded or settings.role is not Role.ALL):
        raise ConfigError(
            "processes",
            "several processes on one data directory are embedded mode's way to run every role "
            "(--role all without --nats-url); scaled out, start more processes of each role",
        )
    if settings.role is Role.EDGE or settings.upstream or settings.endpoint:
        _check_edge(settings)
        return
    if settings.role is Role.ALL:
        return
    if settings.nats_url is None:
        if settings.role in (Role.GATEWAY, Role.PIPELINE):
            return  # what `serve --role all` starts as its two processes
        raise ConfigError(
            "role",
            f"role {settings.role} runs on its own only in scale-out mode (give --nats-url and "
            "--database-url); with embedded storage --role all runs every role (a gateway and a "
            "pipeline process), or --role gateway and --role pipeline run one each",
        )
    if settings.role is Role.PIPELINE:
        raise ConfigError(
            "role",
            "role pipeline is embedded mode's router, delivery and scheduler on one data "
            "directory; scaled out, run --role router, delivery and scheduler",
        )
    if settings.database_url is None or settings.database_url.startswith("sqlite"):
        raise ConfigError(
            "database_url",
            f"role {settings.role} shares its control plane with the other processes: give "
            "--database-url postgresql://... (SQLite in one data directory serves one process)",
        )


def _check_edge(settings: Settings) -> None:
    if settings.role is not Role.EDGE:
        name = "upstream" if settings.upstream else "endpoint"
        raise ConfigError(name, "is for --role edge, the proxy in front of a global endpoint")
    if not settings.upstream:
        raise ConfigError("upstream", "--role edge needs the sites' URLs: --upstream URL_A,URL_B")
    if not settings.endpoint:
        raise ConfigError("endpoint", "--role edge needs the global endpoint's name: --endpoint")


def _check_geoip(settings: Settings) -> None:
    """A geo database needs the `geoip` extra and must be a file: a start stops with one line
    naming the flag rather than every tracked event going without geo."""
    if settings.geoip_db is None:
        return
    try:
        import maxminddb  # noqa: F401 (only whether it can be imported)
    except ImportError:
        raise ConfigError(
            "geoip_db",
            "reading a .mmdb file needs the geoip extra: pip install 'stellwerk[geoip]'",
        ) from None
    if not settings.geoip_db.is_file():
        raise ConfigError("geoip_db", f"{settings.geoip_db} is not a file")


def _check_backups(settings: Settings) -> None:
    if settings.backup_dir is None:
        return
    if not settings.embedded:
        raise ConfigError(
            "backup_dir",
            "scheduled backups copy an embedded data directory; scaled out, back up PostgreSQL "
            "and JetStream with deploy/backup/backup-scale-out (docs/deploy.md)",
        )
    backups, data = settings.backup_dir.resolve(), settings.data_dir.resolve()
    if backups == data or data in backups.parents:
        raise ConfigError(
            "backup_dir",
            f"{settings.backup_dir} is inside the data directory; keep backups apart from "
            "the data (another volume, ideally another disk)",
        )

"""`stellwerk serve`: run the platform (by default every role in one process, embedded storage)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import importlib
import os
import signal
import socket
import ssl
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import Any

import click
import structlog
import uvicorn
from uvicorn.lifespan.on import LifespanOn

from stellwerk.cli.options import (
    setting_option,
    settings_from,
    store_options,
    switch_option,
)
from stellwerk.cli.supervise import die_with_parent, lower_priority, mark_ready, pass_the_gate
from stellwerk.config import Role, Settings
from stellwerk.ops import Lifecycle, configure_logging, start_error_tracking
from stellwerk.secrets import SecretKeyError, load_or_create_key
from stellwerk.storage.signals import http_address

log = structlog.get_logger("stellwerk")


class DrainingServer(uvicorn.Server):
    """uvicorn, with a drain phase on SIGTERM/SIGINT.

    First readiness goes false (load balancers stop sending) while requests are still served for
    `drain_seconds`; then the listener closes and requests in flight finish (up to the shutdown
    timeout); then the stores close and the process exits with status 0.

    More SIGTERMs change nothing: `make` passes a SIGTERM on to its child, which in the same
    process group had it already, and read as "stop now" it would skip the app's shutdown. A
    second SIGINT (Ctrl-C again; make passes none on) stops waiting for requests in flight; the
    stores still close.
    """

    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle[Any], drain_seconds: float):
        self._loop: asyncio.AbstractEventLoop | None = None
        self._exiting = asyncio.Event()
        self._should_exit = False
        super().__init__(config)
        self._lifecycle = lifecycle
        self._drain_seconds = drain_seconds
        self._draining = False

    @property
    def should_exit(self) -> bool:
        return self._should_exit

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        # Set from signal handlers too: the loop is woken through its own queue.
        self._should_exit = value
        if value and self._loop is not None:
            self._loop.call_soon_threadsafe(self._exiting.set)

    async def serve(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        if self._should_exit:
            self._exiting.set()
        await super().serve(sockets)

    async def main_loop(self) -> None:
        """uvicorn's, without its wake-up every 0.1 s to look whether to exit (nine of ten did
        nothing else, in every process): it waits for the exit, and ticks once a second for
        what `on_tick` keeps (the Date header)."""
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 10) % 864_000  # on_tick's "once a second" is every 10th
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._exiting.wait()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        name = signal.Signals(sig).name
        if self._draining:
            if sig == signal.SIGINT:
                self.should_exit = True
                self.force_exit = True
                self._say("stopping now: requests in flight are cut off", signal=name)
            else:
                self._say("already stopping (Ctrl-C twice stops at once)", signal=name)
            return
        self._draining = True
        self._lifecycle.drain()
        self._say("stopping: not ready any more", signal=name, drain_seconds=self._drain_seconds)
        if self._drain_seconds <= 0 or self._loop is None:
            self.should_exit = True
            return
        self._loop.call_soon_threadsafe(self._loop.call_later, self._drain_seconds, self._exit)

    def _say(self, event: str, **values: object) -> None:
        # A signal handler interrupts whatever the main thread does, logging included: the
        # line is written by the loop instead.
        if self._loop is not None:
            self._loop.call_soon_threadsafe(functools.partial(log.info, event, **values))

    def _exit(self) -> None:
        self.should_exit = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets)
        lifespan = self.lifespan
        if isinstance(lifespan, LifespanOn) and not lifespan.shutdown_event.is_set():
            # Forced, uvicorn skips the app's shutdown; left waiting, the lifespan task would
            # be cancelled as the loop closes. Closing the stores is quick (the writers commit
            # what they hold), so it happens on a forced exit too.
            await lifespan.shutdown()


def check_start(settings: Settings) -> None:
    """What no retry can mend stops the start with one line: the secret key that processes
    sharing a database need, a data (or backup) directory that cannot be written. A store out
    of reach, by contrast, is retried with backoff once the server listens."""
    folders = [settings.data_dir]
    if settings.backup_dir is not None:
        folders.append(settings.backup_dir)
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            # A few blocks written and synced: an empty file is made on a full disk too.
            with tempfile.TemporaryFile(dir=folder) as probe:
                probe.write(bytes(16384))
                probe.flush()
                os.fsync(probe.fileno())
        except OSError as exc:
            raise click.ClickException(
                f"{folder} is not a directory Stellwerk can write to: {exc.strerror or exc}"
            ) from None
    check_tls(settings)
    try:
        load_or_create_key(settings.data_dir, os.environ, create=settings.embedded)
    except SecretKeyError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(
            f"{settings.data_dir} is not a directory Stellwerk can write to: {exc.strerror or exc}"
        ) from None


def check_tls(settings: Settings) -> None:
    """A certificate and its key go together, and must load, or the start stops with one line
    (rather than each gateway failing its TLS handshakes)."""
    cert, key = settings.tls_cert, settings.tls_key
    if cert is None and key is None:
        return
    if cert is None or key is None:
        raise click.UsageError("--tls-cert and --tls-key go together")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise click.ClickException(
            f"cannot use the certificate {cert} with the key {key}: {exc.strerror or exc}"
        ) from None


def check_port(host: str, port: int) -> None:
    """Stop at once when another process listens on the port: found before the server's
    dependencies load (seconds of a start), a taken port ends a start, and so a supervised
    gateway's restart, in a fraction of a second. Bound as uvicorn binds (SO_REUSEADDR), so a
    port in TIME_WAIT is not taken; anything else a bind can meet is left for uvicorn to say."""
    if port == 0:
        return
    try:
        addresses = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError:
        return
    for family, kind, protocol, _name, address in addresses:
        with contextlib.ExitStack() as closing:
            try:
                probe = closing.enter_context(socket.socket(family, kind, protocol))
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise click.ClickException(
                        f"cannot listen on {host}:{port}: {exc.strerror or exc}"
                    ) from None


def require(module: str, extra: str, flag: str) -> None:
    """Stop the start with one line when an optional extra a flag needs is not installed."""
    try:
        importlib.import_module(module)
    except ImportError:
        raise click.UsageError(
            f"{flag} needs the {extra} extra: pip install 'stellwerk[{extra}]'"
        ) from None


# The event log's writer thread hands the GIL back and forth with the event loop around every
# SQLite call; at CPython's default 5 ms switch interval it waits that long whenever the loop is
# busy, which shows up directly in acknowledgement latency (measured: p99 at 600 req/s from
# 114 ms to 22 ms, +35% single-event throughput).
SWITCH_INTERVAL_SECONDS = 0.0005


def run(settings: Settings, values: Mapping[str, Any] | None = None) -> int:
    """Serve until stopped; `values` (the raw settings) pass on to the processes of a parent
    that runs several (`Settings.process_count`). Returns the exit status."""
    check_start(settings)
    if settings.sentry_dsn:
        require("sentry_sdk", "sentry", "--sentry-dsn")
    if settings.otlp_endpoint:
        require("opentelemetry.sdk", "otel", "--otlp-endpoint")
    if settings.process_count > 1:
        from stellwerk.cli.supervise import supervise

        if settings.sentry_dsn:
            start_error_tracking(settings.sentry_dsn, str(settings.role))  # the parent's own
        return supervise(settings, values or {})
    serve_here(settings)
    return 0


def serve_edge(settings: Settings) -> None:
    """The edge proxy: no stores, no roles, one process (docs/global-endpoints.md)."""
    from stellwerk.sites import build_edge_app

    uvicorn.run(
        build_edge_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="on",
    )


def serve_here(settings: Settings) -> None:
    """This process serves: every role, or the one role its parent gave it."""
    if settings.role is not Role.PIPELINE:
        check_port(settings.host, settings.port)
    # Imported here so that a refused flag (or a taken port) is reported before the server's
    # dependencies load.
    from stellwerk.app import build_app
    from stellwerk.cli.protocol import JoinedWritesProtocol

    if settings.role is Role.EDGE:
        serve_edge(settings)
        return

    die_with_parent()
    if settings.role is Role.PIPELINE:
        lower_priority(settings.pipeline_nice)
    pass_the_gate()
    if settings.role in (Role.GATEWAY, Role.PIPELINE) and settings.embedded:
        # Two processes write to one stream: each line says whose it is.
        structlog.contextvars.bind_contextvars(process=str(settings.role))
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    if settings.sentry_dsn:
        start_error_tracking(settings.sentry_dsn, str(settings.role))
    app = build_app(
        settings,
        freeze_gc=True,
        on_ready=functools.partial(mark_ready, settings.data_dir, settings.role),
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=JoinedWritesProtocol,
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=int(settings.shutdown_timeout_seconds) or None,
        ssl_certfile=settings.tls_cert,
        ssl_keyfile=settings.tls_key,
    )
    # The app applies the proxy headers itself, behind its fast paths (App.take_proxy_headers),
    # from the hosts uvicorn would trust (FORWARDED_ALLOW_IPS, else loopback).
    app.take_proxy_headers(config.forwarded_allow_ips)
    config.proxy_headers = False
    server = DrainingServer(config, app.state.lifecycle, settings.drain_seconds)
    if settings.role is Role.PIPELINE:
        # Not on the network: it answers probes and metrics to the gateway beside it.
        server.run(sockets=[pipeline_socket(settings.data_dir)])
    else:
        server.run()


def pipeline_socket(data_dir: Path) -> socket.socket:
    """A listening socket in the abstract namespace for the pipeline process's HTTP."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(http_address(data_dir, Role.PIPELINE, os.getpid()))
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock


@click.command()
@store_options
@setting_option("host", "Address to listen on.")
@setting_option("port", "Port to listen on (0: any free port).")
@setting_option(
    "role", "all, gateway, pipeline (embedded), router, delivery, status or scheduler (scale-out)."
)
@setting_option(
    "processes",
    "Embedded, --role all: run a gateway and a pipeline process (2) or one (1); default: the "
    "number of cores, at most 2.",
)
@setting_option(
    "nats_url", "NATS server(s), comma-separated: JetStream holds the log and queues (scale-out)."
)
@setting_option("nats_namespace", "Prefix of every stream and subject (installations may share).")
@setting_option("nats_replicas", "Replicas of each JetStream stream (3 in a cluster).")
@setting_option("redis_url", "Redis for shared caches.")
@switch_option(
    "allow_private_targets", "Let targets reach private, loopback and link-local addresses."
)
@setting_option("log_level", "debug, info, warning or error.")
@setting_option("log_format", "auto (console on a terminal, else JSON), json or console.")
@setting_option("max_body_bytes", "Largest request body accepted.")
@setting_option("max_buses_per_tenant", "How many buses one tenant may have.")
@setting_option("max_rules_per_bus", "How many rules one bus may have.")
@setting_option(
    "function_modules", "Modules (comma-separated) whose functions may be function targets."
)
@setting_option("drain_seconds", "On SIGTERM, how long to keep serving with readiness false.")
@setting_option("shutdown_timeout_seconds", "How long requests in flight may take at shutdown.")
@setting_option(
    "restart_backoff_seconds",
    "Embedded, 2 processes: the first wait before a child that died is restarted (it doubles).",
)
@setting_option(
    "pipeline_nice",
    "Embedded: steps of nice (0-19) the pipeline process runs below the gateway (acks first).",
)
@setting_option("key_cache_seconds", "How long a key lookup is cached (revocation delay).")
@setting_option("tenant_request_rate", "Requests per second one tenant may make (0: unlimited).")
@setting_option("tenant_event_rate", "Events per second one tenant may send (0: unlimited).")
@setting_option("max_batch_events", "Most events one ingest request may carry.")
@setting_option(
    "dedup_window_seconds",
    "How long a repeated event id+source is a duplicate (default 24 h; 1 h on JetStream).",
)
@setting_option("log_retention_hours", "How long the event log keeps routed events.")
@setting_option("retention_interval_seconds", "How often retention trims the log and archives.")
@setting_option("replay_rate", "Events per second one replay sends (0: unlimited).")
@setting_option("max_concurrent_replays", "How many replays run at a time.")
@setting_option(
    "lease_ttl_seconds",
    "Scale-out: how long a router's or scheduler's lease lasts unrenewed (takeover after death).",
)
@setting_option(
    "delivery_lease_seconds",
    "How long a worker holds a delivery before another may take it (0: 600 embedded, 60 shared).",
)
@setting_option(
    "backup_dir",
    "Embedded mode: take backups of the data directory into this folder on a schedule.",
)
@setting_option("backup_interval", "Time between scheduled backups: 3600, 30m, 6h, 1d.")
@setting_option("backup_keep", "How many scheduled backups to keep (older ones are removed).")
@setting_option("otlp_endpoint", "OpenTelemetry collector (OTLP/HTTP) to send traces to.")
@setting_option("tls_cert", "Serve HTTPS with this PEM certificate (chain); needs --tls-key.")
@setting_option("tls_key", "The PEM private key of --tls-cert.")
@setting_option("sentry_dsn", "Sentry DSN to send unhandled errors to (scrubbed of secrets).")
@setting_option(
    "smtp_url", "Mail server for status page subscribers: smtp://user:pass@host:587 or smtps://."
)
@setting_option("smtp_from", "The From: of status page mails: 'Acme <status@acme.example>'.")
@setting_option("lake_url", "Where lake targets write Parquet: a directory or s3://bucket/prefix.")
@setting_option("geoip_db", "A MaxMind-format .mmdb file for tracking's geo (needs [geoip]).")
@setting_option("site", "This deployment's site name, as its peers know it (global endpoints).")
@setting_option("upstream", "--role edge: the sites' base URLs, comma-separated, primary first.")
@setting_option("endpoint", "--role edge: the global endpoint whose active site gets the traffic.")
def serve(**values: Any) -> None:
    """Run Stellwerk."""
    settings = settings_from(values)
    configure_logging(settings.log_level, settings.log_format)  # type: ignore[arg-type]
    status = run(settings, values)
    if status:
        raise SystemExit(status)

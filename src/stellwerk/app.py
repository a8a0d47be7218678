"""The composition root: builds the services of a process and the ASGI app that serves them.

The app listens at once; the services open in the background (migrations, bootstrap) so that the
probes can tell "starting" from "ready", and a store that is down at start is retried, not fatal.
"""

from __future__ import annotations

import asyncio
import functools
import gc
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final, cast

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from stellwerk import __version__
from stellwerk.api import (
    ENDPOINTS,
    HEALTH_ENDPOINTS,
    Answerer,
    ApiError,
    BodyLimitMiddleware,
    ErrorBody,
    ErrorMiddleware,
    FastPaths,
    IngestFastPath,
    Operation,
    RequestMetricsMiddleware,
    build_openapi,
    build_routes,
    handle_api_error,
    handle_http_exception,
    json_response,
    platform_from,
)
from stellwerk.capability import Capability
from stellwerk.compose import Services, open_services
from stellwerk.config import Role, Settings
from stellwerk.delivery import DeliveryMetrics
from stellwerk.ingest import IngestMetrics
from stellwerk.ops import Lifecycle, Metrics, PeerMetrics, Tracing, cancelled_meanwhile
from stellwerk.service import Platform, ServiceError
from stellwerk.storage.signals import http_address
from stellwerk.storage.sqlite import PIPELINE_LOCK, FileLock

log = structlog.get_logger("stellwerk")


RETRY_START_MAX_SECONDS = 10.0
START_REMINDER_SECONDS = 60.0


class App(Starlette):
    """Starlette with layers ahead of its own error layer and every middleware (`outermost`:
    ingest's fast path, then the capabilities' `FastPaths`), whose answers need none of the
    layers behind them and cost a fraction of theirs (an answerer's failure leaves the request
    to the app), and, when the server hands it over (`take_proxy_headers`), the proxy-headers
    layer behind them."""

    def __init__(self, *, outermost: Callable[[ASGIApp], ASGIApp] | None, **options: Any) -> None:
        self._outermost = outermost
        self._proxies: list[str] | str | None = None
        super().__init__(**options)

    def take_proxy_headers(self, trusted_hosts: list[str] | str) -> None:
        """Apply `X-Forwarded-For` and `-Proto` from `trusted_hosts` (uvicorn's
        `forwarded_allow_ips`) in the app, behind the fast paths, instead of in the server in
        front of them: what the fast paths answer depends on neither the client's address nor
        its scheme, and the layer cost as much as a tenth of such an answer. The server must
        then leave its own layer out (`proxy_headers=False`)."""
        if self.middleware_stack is not None:
            raise RuntimeError("the proxy headers are taken over before the first request")
        self._proxies = trusted_hosts

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        if self._proxies is not None:
            # uvicorn types ASGI apps more narrowly than Starlette; the layer is the same.
            stack = cast(ASGIApp, ProxyHeadersMiddleware(cast(Any, stack), self._proxies))
        return stack if self._outermost is None else self._outermost(stack)


def _ingest_first(
    ingest: Callable[[ASGIApp], ASGIApp], inner: Callable[[ASGIApp], ASGIApp] | None
) -> Callable[[ASGIApp], ASGIApp]:
    """The outermost layers: ingest's fast path, then `inner` (if any) around the stack."""

    def wrap(stack: ASGIApp) -> ASGIApp:
        return ingest(stack if inner is None else inner(stack))

    return wrap


async def _start(
    settings: Settings,
    lifecycle: Lifecycle[Services],
    metrics: Metrics,
    tracing: Tracing | None,
    *,
    freeze_gc: bool,
    on_ready: Callable[[], None] | None,
    capabilities: Sequence[Capability],
) -> None:
    ingest_metrics = IngestMetrics(metrics)
    delivery_metrics = DeliveryMetrics(metrics.registry)
    delay = 0.1
    # A store out of reach fails every attempt the same way: one line as that begins (again
    # when the kind of failure changes), a reminder a minute, and one line once started.
    said: tuple[type[Exception], float] | None = None
    while True:
        try:
            with metrics.attempt():
                services = await open_services(
                    settings,
                    metrics,
                    ingest_metrics,
                    delivery_metrics,
                    tracing=tracing,
                    capabilities=capabilities,
                )
        except Exception as exc:
            if cancelled_meanwhile():
                # Stopped while starting: a driver may answer the cancellation with an error of
                # its own, which is no reason to start again (and the stop waits for this task).
                raise
            lifecycle.failed_starts += 1
            lifecycle.last_start_error = f"{type(exc).__name__}: {exc}"
            now = asyncio.get_running_loop().time()
            if said is None or said[0] is not type(exc):
                said = (type(exc), now)
                log.error(
                    "start failed, retrying", error=lifecycle.last_start_error, retry_in=delay
                )
            elif now - said[1] >= START_REMINDER_SECONDS:
                said = (type(exc), now)
                log.warning(
                    "start still failing",
                    error=lifecycle.last_start_error,
                    attempts=lifecycle.failed_starts,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_START_MAX_SECONDS)
            continue
        if lifecycle.failed_starts:
            log.info("started after failed attempts", attempts=lifecycle.failed_starts)
        lifecycle.last_start_error = None
        services.start()
        lifecycle.ready(services)
        if freeze_gc:
            settle_collector()
        log.info("ready", database=services.stores.control.dialect, data_dir=str(settings.data_dir))
        if on_ready is not None:
            on_ready()
        return


# The youngest generation's threshold in a server process (CPython's default is 700). Its count
# is allocations minus deallocations, held at zero after a collection: the objects of requests
# in flight at a collection are in an older generation when they die, and the next requests'
# objects count up again. So under load a young collection comes whenever the requests in
# flight have made some thousand objects (every ~50 single-event requests at 64 connections,
# ~170 µs each), although almost none of them is garbage. Above what requests in flight hold, a
# young collection comes only once cyclic garbage accumulates: ~3 µs of the event loop's CPU
# per single-event request, and the caches it thrashed, saved. A collection of 10,000 young
# objects takes about a millisecond.
YOUNG_COLLECTION_THRESHOLD: Final = 10_000


def settle_collector() -> None:
    """Set the garbage collector for a long-running server process, once it has started."""
    # Everything alive now (modules, compiled rules, stores) lives as long as the process.
    # Frozen, the collector's full passes skip it: under a replay beside live traffic they
    # took 60-90 ms each and set ingest's p99, and take 1-4 ms frozen.
    gc.collect()
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, middle, old)


def pipeline_address(data_dir: Path) -> str | None:
    """Where the pipeline process of the data directory answers HTTP, if one runs (it holds the
    pipeline lock, which names it)."""
    pid = FileLock(data_dir / PIPELINE_LOCK).holder()
    return http_address(data_dir, Role.PIPELINE, pid) if pid is not None else None


def default_capabilities() -> list[Capability]:
    """The capabilities every Stellwerk process mounts (DESIGN.md, "Layout")."""
    from stellwerk.awsapi import CAPABILITY as EVENTBRIDGE_API
    from stellwerk.console import CAPABILITY as CONSOLE
    from stellwerk.sites import CAPABILITY as SITES
    from stellwerk.statuspages import CAPABILITY as STATUS_PAGES
    from stellwerk.tracking import CAPABILITY as TRACKING

    return [STATUS_PAGES, EVENTBRIDGE_API, TRACKING, SITES, CONSOLE]


def openapi_document(capabilities: Sequence[Capability] | None = None) -> dict[str, object]:
    if capabilities is None:
        capabilities = default_capabilities()
    endpoints = [*ENDPOINTS, *(e for c in capabilities for e in c.endpoints)]
    operations = [
        Operation(
            method=e.method,
            path=e.path,
            summary=e.summary,
            tags=(e.tag,),
            scopes=(str(e.scope),) if e.scope else (),
            request_body=e.request_body,
            request_body_required=e.request_body_required,
            request_content_types=e.request_content_types,
            responses=e.responses,
            path_params=e.path_params,
            query_params=e.query_params,
        )
        for e in endpoints
    ]
    return build_openapi(operations, title="Stellwerk", version=__version__, error_body=ErrorBody)


def serves_api(role: Role) -> bool:
    """Whether a process of this role serves the API (gateways; every process in `all`)."""
    return role in (Role.ALL, Role.GATEWAY)


def build_app(
    settings: Settings,
    *,
    metrics: Metrics | None = None,
    freeze_gc: bool = False,
    on_ready: Callable[[], None] | None = None,
    capabilities: Sequence[Capability] | None = None,
) -> App:
    """The ASGI app; `freeze_gc` is for a server process of its own (`stellwerk serve`), not for
    tests that build many apps in one process. `on_ready` is called once the services are.
    `capabilities`: what it mounts besides the core (`default_capabilities()` when None)."""
    metrics = metrics or Metrics()
    if capabilities is None:
        capabilities = default_capabilities()
    if settings.embedded:
        volumes = {"data": settings.data_dir}
        if settings.backup_dir is not None:
            volumes["backups"] = settings.backup_dir
        metrics.watch_volumes(volumes)
    lifecycle: Lifecycle[Services] = Lifecycle()
    tracing = (
        Tracing(settings.otlp_endpoint, str(settings.role)) if settings.otlp_endpoint else None
    )
    document = openapi_document(capabilities)

    def platform() -> Platform:
        return platform_from(lifecycle)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        starting = asyncio.create_task(
            _start(
                settings,
                lifecycle,
                metrics,
                tracing,
                freeze_gc=freeze_gc,
                on_ready=on_ready,
                capabilities=capabilities,
            )
        )
        try:
            yield
        finally:
            lifecycle.stop()
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            if lifecycle.started:
                await lifecycle.services.close()
            if tracing is not None:
                await asyncio.to_thread(tracing.close)

    def answerers() -> list[Answerer] | None:
        if not lifecycle.started:
            return None
        opened = lifecycle.services.capabilities
        return [c.fast_path(opened[c.name]) for c in capabilities if c.fast_path is not None]

    async def openapi_json(_request: Request) -> Response:
        return json_response(document)

    middleware = [
        Middleware(ErrorMiddleware),
        Middleware(RequestMetricsMiddleware, metrics),
        Middleware(BodyLimitMiddleware, settings.max_body_bytes),
    ]
    routes: list[BaseRoute]
    outermost: Callable[[ASGIApp], ASGIApp] | None = None
    if serves_api(settings.role):
        # Capabilities' public routes first: a cached status page is answered in a few hundred
        # microseconds, and matching the API's paths ahead of it took 40% of that. Their
        # catch-alls (a custom domain's page) come after everything else.
        routes = [
            *(route for c in capabilities for route in c.routes),
            *build_routes(ENDPOINTS, platform),
            *build_routes([e for c in capabilities for e in c.endpoints], platform),
            Route("/openapi.json", openapi_json, methods=["GET"]),
            *(route for c in capabilities for route in c.last_routes),
        ]
        # Ingest's one route, answered ahead of the rest with the same outcomes.
        ingest = functools.partial(
            IngestFastPath,
            lifecycle=lifecycle,
            metrics=metrics,
            max_body_bytes=settings.max_body_bytes,
        )
        if any(c.fast_path is not None for c in capabilities):
            # What capabilities answer from memory (a cached status page), ahead of the rest.
            outermost = functools.partial(FastPaths, answerers=answerers, metrics=metrics)
        if tracing is not None:
            # Traced, ingest goes through the tracing layer like every other request.
            middleware.insert(0, Middleware(ingest))
            middleware.insert(0, tracing.middleware())
        else:
            # Outermost: ingest answers its own errors, and needs neither the capabilities'
            # fast paths, nor the proxy headers (it reads neither the client's address nor
            # its scheme), nor Starlette's error layer: each cost a few microseconds of the
            # loop thread per request.
            outermost = _ingest_first(ingest, outermost)
    else:
        # A router, delivery worker or scheduler answers probes and metrics, nothing else.
        routes = [*build_routes(HEALTH_ENDPOINTS, platform)]
    app = App(
        outermost=outermost,
        routes=routes,
        middleware=middleware,
        exception_handlers={
            ApiError: handle_api_error,
            ServiceError: handle_api_error,
            HTTPException: handle_http_exception,
        },
        lifespan=lifespan,
    )
    app.state.lifecycle = lifecycle
    app.state.metrics = metrics
    if settings.embedded and settings.role is Role.GATEWAY:
        app.state.peer_metrics = PeerMetrics(
            metrics, "gateway", "pipeline", functools.partial(pipeline_address, settings.data_dir)
        )
    app.state.settings = settings
    return app

"""OpenTelemetry traces (`--otlp-endpoint`): a span per ingest request and per delivery attempt.

Optional twice over: the `otel` extra brings the SDK, and without an endpoint nothing here is
imported or wrapped, so a process without traces pays nothing. Spans carry the event ids
(`cloudevents.event_id`; a batch's first ids under `stellwerk.event_ids`), the tenant, bus,
rule and target, and the outcome; never a payload or a key. They leave in batches from a
background thread (OTLP over HTTP/protobuf) and are flushed when the process stops.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stellwerk import __version__
from stellwerk.ops.logging import redact
from stellwerk.refs import TenantName

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer

    from stellwerk.delivery import Outcome, Target, TargetBinding
    from stellwerk.seams import Announce, AppendResult, Delivery, EventLog, NewEvent

# A batch of 1,000 events names its first ids, not all: spans are small by design.
MAX_IDS: Final = 16
INGEST_PATH_SUFFIX: Final = "/events"


def traces_url(endpoint: str) -> str:
    """The collector's traces URL: an endpoint without a path gets OTLP's `/v1/traces`."""
    return (
        endpoint
        if endpoint.rstrip("/").endswith("/v1/traces")
        else (endpoint.rstrip("/") + "/v1/traces")
    )


class Tracing:
    """One process's tracer provider and what it wraps."""

    def __init__(self, endpoint: str, role: str) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        resource = Resource.create(
            {"service.name": "stellwerk", "service.version": __version__, "stellwerk.role": role}
        )
        self.provider: TracerProvider = TracerProvider(resource=resource)
        self.provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_url(endpoint)))
        )
        self.tracer: Tracer = self.provider.get_tracer("stellwerk", __version__)

    def middleware(self) -> Middleware:
        """The layer that makes a span of every ingest request; outermost."""
        return Middleware(IngestSpans, tracer=self.tracer)

    def event_log(self, log: EventLog) -> EventLog:
        """The event log, its appends noting their event ids on the request's span."""
        return _NotingAppends(log)

    def targets(
        self, resolve: Callable[[TenantName, str, str, str], TargetBinding | None]
    ) -> Callable[[TenantName, str, str, str], TargetBinding | None]:
        """A target resolver whose targets make a span of every attempt."""

        def traced(tenant: TenantName, bus: str, rule: str, target: str) -> TargetBinding | None:
            binding = resolve(tenant, bus, rule, target)
            if binding is None:
                return None
            return dataclasses.replace(binding, target=_TracedTarget(binding.target, self.tracer))

        return traced

    def close(self) -> None:
        self.provider.shutdown()  # flushes what is still queued


class IngestSpans:
    """A server span around every `POST .../events` (ingest), ahead of the app."""

    def __init__(self, app: ASGIApp, tracer: Tracer) -> None:
        self.app = app
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or not path.endswith(INGEST_PATH_SUFFIX)
        ):
            await self.app(scope, receive, send)
            return
        from opentelemetry.trace import SpanKind, Status, StatusCode

        with self.tracer.start_as_current_span(
            "ingest",
            kind=SpanKind.SERVER,
            attributes={"http.request.method": "POST", "http.route": "/v1/buses/{bus}/events"},
        ) as span:
            status = 500

            async def noting(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            try:
                await self.app(scope, receive, noting)
            finally:
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))


class _NotingAppends:
    """Delegates to the event log; `append` notes the batch on the current span."""

    def __init__(self, log: EventLog) -> None:
        self._log = log

    def __getattr__(self, name: str) -> Any:
        return getattr(self._log, name)

    async def append(
        self, batch: Sequence[NewEvent], announce: Announce | None = None
    ) -> list[AppendResult]:
        from opentelemetry import trace

        span = trace.get_current_span()
        if batch and span.is_recording():
            first = batch[0]
            span.set_attributes(
                {
                    "cloudevents.event_id": first.id,
                    "stellwerk.event_ids": [e.id for e in batch[:MAX_IDS]],
                    "stellwerk.events": len(batch),
                    "stellwerk.tenant": first.tenant,
                    "stellwerk.bus": first.bus,
                }
            )
        return await self._log.append(batch, announce)


class _TracedTarget:
    """A target whose every attempt is a client span named by the event id."""

    def __init__(self, target: Target, tracer: Tracer) -> None:
        self._target = target
        self._tracer = tracer

    async def deliver(self, delivery: Delivery) -> Outcome:
        from opentelemetry.trace import SpanKind, Status, StatusCode

        with self._tracer.start_as_current_span(
            "deliver",
            kind=SpanKind.CLIENT,
            attributes={
                "cloudevents.event_id": delivery.event_id,
                "stellwerk.tenant": delivery.tenant,
                "stellwerk.bus": delivery.bus,
                "stellwerk.rule": delivery.rule,
                "stellwerk.target": delivery.target_id,
                "stellwerk.attempt": delivery.attempts + 1,
                "stellwerk.delivery_id": delivery.id,
                "stellwerk.event_age_seconds": _age(delivery.recorded_time),
            },
        ) as span:
            outcome = await self._target.deliver(delivery)
            name = type(outcome).__name__
            span.set_attribute("stellwerk.outcome", name)
            if name != "Delivered":
                reason = redact(getattr(outcome, "reason", name))
                span.set_status(Status(StatusCode.ERROR, str(reason)[:500]))
            return outcome

    async def close(self) -> None:
        await self._target.close()


def _age(recorded: datetime) -> float:
    from stellwerk.clock import utc_now

    return max(0.0, (utc_now() - recorded).total_seconds())

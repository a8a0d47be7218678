"""Building a deliverable target from a saved target spec, with the process's shared parts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from stellwerk.delivery.bus_target import BusTarget
from stellwerk.delivery.kinds import LateTarget, TargetKinds
from stellwerk.delivery.model import Target
from stellwerk.delivery.targets import (
    AddressPolicy,
    FunctionTarget,
    HttpTarget,
    LogTarget,
    RetiringSecret,
    SessionPool,
    build_auth,
)
from stellwerk.refs import BusRef, TenantName
from stellwerk.rules import TargetSpec, http_url
from stellwerk.seams import EventLog
from stellwerk.storage.control import ConnectionRecord


class TargetBuilder:
    def __init__(
        self,
        *,
        session_pool: SessionPool,
        event_log: EventLog,
        appended: Callable[[BusRef], None],
        allow_private: bool,
        bus_refusal: Callable[[str, str, str], Awaitable[str | None]],
        kinds: TargetKinds | None = None,
    ) -> None:
        self._kinds = kinds or TargetKinds()
        self._pool = session_pool
        self._log = event_log
        self._appended = appended
        self._bus_refusal = bus_refusal
        self._allow_private = allow_private
        self._policy = AddressPolicy.build(allow_private, ())

    def __call__(
        self,
        tenant: TenantName,
        bus: str,
        spec: TargetSpec,
        connections: Mapping[str, ConnectionRecord],
    ) -> Target:
        if spec.type == "http":
            assert spec.url is not None
            assert spec.secret is not None
            auth = None
            if spec.connection is not None:
                record = connections.get(spec.connection)
                if record is None:
                    raise LookupError(f"connection {spec.connection!r} does not exist any more")
                auth = build_auth(record.spec, session_pool=self._pool, policy=self._policy)
            retiring = None
            if spec.previous_secret is not None and spec.previous_secret_expires_at is not None:
                until = spec.previous_secret_expires_at.timestamp()
                retiring = RetiringSecret(spec.previous_secret, until)
            parameters = spec.http_parameters
            # JSON-path values differ per event: the target fills them in at each delivery.
            per_event = parameters if parameters is not None and parameters.json_paths else None
            return HttpTarget(
                spec.url if per_event is not None else http_url(spec.url, parameters),
                session_pool=self._pool,
                secret=spec.secret,
                retiring_secret=retiring,
                timeout=spec.timeout_seconds,
                concurrency=spec.concurrency,
                rate_limit=spec.rate_limit,
                auth=auth,
                headers=parameters.headers if parameters is not None and per_event is None else {},
                parameters=per_event,
                allow_private=self._allow_private,
            )
        if spec.type == "function":
            assert spec.function is not None
            return FunctionTarget(spec.function, concurrency=spec.concurrency)
        if spec.type == "bus":
            assert spec.bus is not None
            owner, bus = TenantName(spec.tenant) if spec.tenant else tenant, spec.bus
            return BusTarget(
                self._log,
                owner,
                bus,
                self._appended,
                lambda: self._bus_refusal(owner, bus, tenant),
            )
        if spec.type == "log":
            return LogTarget()
        return LateTarget(self._kinds, BusRef(tenant, bus), spec)

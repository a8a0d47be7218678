"""What each client method does, as plans (see `_exchange`): sending events in batches, and the
thin management calls. No I/O here; `Client` and `AsyncClient` run the same plans."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final, TypeVar
from urllib.parse import quote, urlencode

import msgspec

from stellwerk.client._errors import SendError, StellwerkError, Unreachable, error_from_answer
from stellwerk.client._exchange import (
    Answer,
    Call,
    Endpoints,
    Failure,
    Pause,
    Plan,
    Retries,
    exchange,
)
from stellwerk.client._models import (
    Archive,
    ArchiveList,
    Bus,
    BusList,
    EndpointState,
    EventFailure,
    IngestAnswer,
    Replay,
    ReplayList,
    Rule,
    RuleList,
    SendResult,
    Target,
)

T = TypeVar("T")

BATCH_CONTENT_TYPE: Final = "application/cloudevents-batch+json"
JSON: Final = "application/json"
# The server's defaults (`--max-batch-events`, `--max-body-bytes`). A server configured lower
# answers 413, and the client halves its batches until they fit.
MAX_BATCH_EVENTS: Final = 1000
MAX_BATCH_BYTES: Final = 4 * 1024 * 1024

_encode: Final = msgspec.json.Encoder().encode
_ingest_answer: Final = msgspec.json.Decoder(IngestAnswer)


@dataclass
class Session:
    """What one client's plans share: where to send, how hard to try, how big a batch is."""

    endpoints: Endpoints
    retries: Retries
    max_batch_events: int = MAX_BATCH_EVENTS
    max_batch_bytes: int = MAX_BATCH_BYTES
    # A global endpoint whose active site `send` goes to, its state read again after `state_ttl`.
    global_endpoint: str | None = None
    state_ttl: float = 2.0
    state_read_at: float | None = None
    sites: dict[str, str] = field(default_factory=dict)  # site name -> URL, as each answered


def segment(name: str) -> str:
    """A name as one path segment (names follow `[A-Za-z0-9._-]{1,64}`, but a bad one must
    reach the server whole, to be refused there with the reason)."""
    return quote(name, safe="")


def prepare(events: Iterable[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[bytes]]:
    """Copies of the events with an `id` (a uuid4) and `specversion` where they lack one, and
    each one's JSON: encoded once, so every retry sends the same ids."""
    prepared: list[dict[str, Any]] = []
    encoded: list[bytes] = []
    for index, given in enumerate(events):
        if not isinstance(given, Mapping):
            raise TypeError(f"event {index} is a {type(given).__name__}, not a mapping")
        event = dict(given)
        if event.get("id") is None:
            event["id"] = str(uuid.uuid4())
        if event.get("specversion") is None:
            event["specversion"] = "1.0"
        try:
            encoded.append(_encode(event))
        except (TypeError, msgspec.EncodeError) as exc:
            raise TypeError(f"event {index} cannot be encoded as JSON: {exc}") from exc
        prepared.append(event)
    return prepared, encoded


def _batch_end(session: Session, encoded: Sequence[bytes], start: int) -> int:
    """The end of the batch that starts at `start`: as many events as the limits allow, and at
    least one (an event above the byte limit goes alone, for the server to refuse)."""
    size = 2  # the brackets
    end = start
    while end < len(encoded) and end - start < session.max_batch_events:
        size += len(encoded[end]) + (1 if end > start else 0)
        if size > session.max_batch_bytes and end > start:
            break
        end += 1
    return end


def _event_id(event: Mapping[str, Any]) -> str:
    return str(event["id"])


def endpoint_state(session: Session, name: str) -> Plan[EndpointState]:
    """Global endpoint `name` as its sites see it, asking each URL once: the secondary's view
    when it answers (it is the site that moves the state), else the first answer; when none
    does, the last error. The URL of the active site is preferred by later requests from then
    on."""
    path = f"/v1/endpoints/{segment(name)}/state"  # ingest keys may read it, admin keys too
    views: list[EndpointState] = []
    last: StellwerkError | None = None
    for url in session.endpoints.urls:
        outcome = yield Call(url, "GET", path)
        if isinstance(outcome, Failure) and outcome.stale:
            outcome = yield Call(url, "GET", path)  # a kept-alive connection the server closed
        if isinstance(outcome, Answer) and outcome.status == 200:
            view = msgspec.json.decode(outcome.body, type=EndpointState)
            session.sites[view.site] = url
            views.append(view)
        elif isinstance(outcome, Answer):
            # One site may not know the key or the endpoint yet (mirroring takes a moment).
            last = error_from_answer(outcome.status, outcome.body, outcome.retry_after)
        else:
            last = Unreachable(f"{url} did not answer: {outcome!r}", error="Unreachable")
    session.state_read_at = time.monotonic()
    if not views:
        assert last is not None
        raise last
    chosen = next((v for v in views if v.site == v.secondary), views[0])
    session.endpoints.prefer(session.sites.get(chosen.active))
    return chosen


def _follow_endpoint(session: Session) -> Plan[None]:
    """Read the global endpoint's state when it is older than `state_ttl` (its answer decides
    where requests go first); a state that cannot be read leaves the client's own view."""
    name = session.global_endpoint
    if name is None:
        return
    read = session.state_read_at
    if read is not None and time.monotonic() - read < session.state_ttl:
        return
    try:
        yield from endpoint_state(session, name)
    except StellwerkError:
        session.state_read_at = time.monotonic()


def send(session: Session, bus: str, events: Iterable[Mapping[str, Any]]) -> Plan[SendResult]:
    """Send `events` to `bus` in batches; the result once every one is acknowledged, else
    `SendError` with what the server refused and what was not sent."""
    yield from _follow_endpoint(session)
    prepared, encoded = prepare(events)
    path = f"/v1/buses/{segment(bus)}/events"
    failures: list[EventFailure] = []
    refused: set[int] = set()
    acknowledged: list[str] = []
    accepted = duplicates = batches = 0
    first_status: int | None = None
    start = 0
    while start < len(encoded):
        end = _batch_end(session, encoded, start)
        body = b"[" + b",".join(encoded[start:end]) + b"]"
        try:
            answer = yield from exchange(
                session.endpoints, session.retries, "POST", path, body, BATCH_CONTENT_TYPE
            )
        except StellwerkError as exc:
            raise _send_error(exc, prepared, failures, acknowledged, start) from exc
        if answer.status == 413 and end - start > 1:
            # The server's (or a proxy's) limits are lower than ours: halve the batch, and keep
            # the lower limit for later batches. A body limit lowered this way stays above half
            # the real one, even when one event alone is above it (it is then refused alone).
            if error_from_answer(answer.status, answer.body).error == "BatchTooLarge":
                session.max_batch_events = max(1, (end - start) // 2)
            else:
                session.max_batch_bytes = min(session.max_batch_bytes, len(body) // 2)
            continue
        if answer.status == 202 or (answer.status in (400, 413) and _lists_failures(answer.body)):
            result = _ingest_answer.decode(answer.body)
        elif answer.status == 413:  # one event, too large for any request body
            error = error_from_answer(answer.status, answer.body)
            result = IngestAnswer(
                failed=[EventFailure(index=0, error=error.error, message=error.message)]
            )
        else:
            error = error_from_answer(answer.status, answer.body, answer.retry_after)
            raise _send_error(error, prepared, failures, acknowledged, start) from error
        for failure in result.failed:
            index = start + failure.index
            refused.add(index)
            failures.append(
                msgspec.structs.replace(failure, index=index, id=_event_id(prepared[index]))
            )
            if first_status is None:
                first_status = answer.status
        acknowledged.extend(_event_id(prepared[i]) for i in range(start, end) if i not in refused)
        accepted += result.accepted
        duplicates += result.duplicates
        batches += 1
        start = end
    if failures:
        first = failures[0]
        raise SendError(
            f"{len(failures)} of {len(prepared)} events were refused; the first, event "
            f"{first.index} (id {first.id!r}): {first.error}: {first.message}",
            failures=failures,
            acknowledged=acknowledged,
            unsent=[],
            error=first.error,
            status=first_status,
            field=first.field,
        )
    return SendResult(
        ids=[_event_id(e) for e in prepared],
        accepted=accepted,
        duplicates=duplicates,
        batches=batches,
    )


def _lists_failures(body: bytes) -> bool:
    try:
        failed = msgspec.json.decode(body).get("failed")
    except (msgspec.DecodeError, AttributeError):
        return False
    return isinstance(failed, list) and bool(failed)


def _send_error(
    cause: StellwerkError,
    prepared: list[dict[str, Any]],
    failures: list[EventFailure],
    acknowledged: list[str],
    start: int,
) -> SendError:
    unsent = prepared[start:]
    return SendError(
        f"{len(unsent)} of {len(prepared)} events were not acknowledged: {cause}",
        failures=failures,
        acknowledged=acknowledged,
        unsent=unsent,
        error=cause.error,
        status=cause.status,
        field=cause.field,
    )


def call(
    session: Session,
    method: str,
    path: str,
    answer_type: type[T] | None,
    body: object = None,
    *,
    idempotent: bool = True,
) -> Plan[T | None]:
    """One management request: its answer decoded as `answer_type`, or the error raised."""
    data = None if body is None else _encode(body)
    answer = yield from exchange(
        session.endpoints,
        session.retries,
        method,
        path,
        data,
        JSON if data is not None else None,
        idempotent=idempotent,
    )
    if answer.status >= 300:
        raise error_from_answer(answer.status, answer.body, answer.retry_after)
    if answer_type is None:
        return None
    return msgspec.json.decode(answer.body, type=answer_type)


def _some(plan: Plan[T | None]) -> Plan[T]:
    value = yield from plan
    assert value is not None
    return value


# Buses


def put_bus(
    session: Session, name: str, description: str, schema_validation: str | None
) -> Plan[Bus]:
    body: dict[str, Any] = {"description": description}
    if schema_validation is not None:
        body["schema_validation"] = schema_validation
    return _some(call(session, "PUT", f"/v1/buses/{segment(name)}", Bus, body))


def get_bus(session: Session, name: str) -> Plan[Bus]:
    return _some(call(session, "GET", f"/v1/buses/{segment(name)}", Bus))


def list_buses(session: Session) -> Plan[list[Bus]]:
    answer = yield from _some(call(session, "GET", "/v1/buses", BusList))
    return answer.buses


def delete_bus(session: Session, name: str) -> Plan[None]:
    yield from call(session, "DELETE", f"/v1/buses/{segment(name)}", None)


# Rules


def _rule_path(bus: str, name: str) -> str:
    return f"/v1/buses/{segment(bus)}/rules/{segment(name)}"


def put_rule(
    session: Session,
    bus: str,
    name: str,
    pattern: Mapping[str, Any],
    targets: Sequence[Target | Mapping[str, Any]],
    state: str,
    description: str,
    view: str,
) -> Plan[Rule]:
    body = {
        "pattern": dict(pattern),
        "targets": [t if isinstance(t, Target) else dict(t) for t in targets],
        "state": state,
        "description": description,
        "view": view,
    }
    return _some(call(session, "PUT", _rule_path(bus, name), Rule, body))


def get_rule(session: Session, bus: str, name: str) -> Plan[Rule]:
    return _some(call(session, "GET", _rule_path(bus, name), Rule))


def list_rules(session: Session, bus: str) -> Plan[list[Rule]]:
    answer = yield from _some(call(session, "GET", f"/v1/buses/{segment(bus)}/rules", RuleList))
    return answer.rules


def delete_rule(session: Session, bus: str, name: str) -> Plan[None]:
    yield from call(session, "DELETE", _rule_path(bus, name), None)


# Archives


def _archive_path(bus: str, name: str) -> str:
    return f"/v1/buses/{segment(bus)}/archives/{segment(name)}"


def put_archive(
    session: Session,
    bus: str,
    name: str,
    pattern: Mapping[str, Any] | None,
    retention_days: int,
    description: str,
) -> Plan[Archive]:
    body = {
        "pattern": None if pattern is None else dict(pattern),
        "retention_days": retention_days,
        "description": description,
    }
    return _some(call(session, "PUT", _archive_path(bus, name), Archive, body))


def get_archive(session: Session, bus: str, name: str) -> Plan[Archive]:
    return _some(call(session, "GET", _archive_path(bus, name), Archive))


def list_archives(session: Session, bus: str) -> Plan[list[Archive]]:
    path = f"/v1/buses/{segment(bus)}/archives"
    answer = yield from _some(call(session, "GET", path, ArchiveList))
    return answer.archives


def delete_archive(session: Session, bus: str, name: str) -> Plan[None]:
    yield from call(session, "DELETE", _archive_path(bus, name), None)


# Replays


def _time(value: datetime | str, field: str) -> str:
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        raise ValueError(f"{field} must be a timezone-aware datetime (or an RFC 3339 string)")
    return value.isoformat()


def start_replay(
    session: Session,
    name: str,
    archive: str,
    bus: str,
    start: datetime | str,
    end: datetime | str,
    rules: Sequence[str] | None,
    description: str,
) -> Plan[Replay]:
    body: dict[str, Any] = {
        "name": name,
        "archive": archive,
        "bus": bus,
        "start": _time(start, "start"),
        "end": _time(end, "end"),
        "description": description,
    }
    if rules is not None:
        body["rules"] = list(rules)
    # A replay's name is used once for good: a start sent twice would be refused the second
    # time, so it is not sent again once it may have reached the server.
    return _some(call(session, "POST", "/v1/replays", Replay, body, idempotent=False))


def get_replay(session: Session, name: str) -> Plan[Replay]:
    return _some(call(session, "GET", f"/v1/replays/{segment(name)}", Replay))


def list_replays(session: Session, state: str | None) -> Plan[list[Replay]]:
    query = f"?{urlencode({'state': state})}" if state is not None else ""
    answer = yield from _some(call(session, "GET", f"/v1/replays{query}", ReplayList))
    return answer.replays


def cancel_replay(session: Session, name: str) -> Plan[Replay]:
    return _some(call(session, "DELETE", f"/v1/replays/{segment(name)}", Replay))


def wait_replay(
    session: Session, name: str, poll: float, within: float | None, clock: Callable[[], float]
) -> Plan[Replay]:
    """The replay once it has finished (completed, cancelled or failed), asked every `poll`
    seconds; `TimeoutError` if it has not finished `within` seconds."""
    deadline = None if within is None else clock() + within
    while True:
        replay = yield from get_replay(session, name)
        if replay.finished:
            return replay
        if deadline is not None and clock() >= deadline:
            raise TimeoutError(
                f"replay {name!r} is still {replay.state} after {within} s "
                f"({replay.replayed} of {replay.total} events replayed)"
            )
        yield Pause(poll)


def open_session(
    endpoint: str | Sequence[str],
    retries: Retries | None,
    failover_cooldown: float,
    max_batch_events: int,
    max_batch_bytes: int,
    global_endpoint: str | None = None,
) -> Session:
    """The state a client's constructor sets up, checked once for both clients."""
    urls = [endpoint] if isinstance(endpoint, str) else list(endpoint)
    if max_batch_events < 1 or max_batch_bytes < 1:
        raise ValueError("max_batch_events and max_batch_bytes must be at least 1")
    return Session(
        endpoints=Endpoints(urls, failover_cooldown),
        retries=retries or Retries(),
        max_batch_events=max_batch_events,
        max_batch_bytes=max_batch_bytes,
        global_endpoint=global_endpoint,
    )


def retry_after(value: str | None) -> float | None:
    """`Retry-After` in seconds: a number, or an HTTP date (RFC 9110); None if neither."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())

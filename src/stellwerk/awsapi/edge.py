"""The AWS JSON 1.1 protocol on `POST /`: `X-Amz-Target: AWSEvents.<Operation>`, a signed
request (SigV4), a JSON body; the answer's JSON or the error the SDKs raise typed.

Every call is answered ahead of Starlette's stack (`fast_path`, a `Deferred` the core's
`FastPaths` runs): a PutEvents call's whole cost counts, and the framework's layers cost as
much as the operation. The Starlette route (`aws_json`) answers the same way, with the same
function, for requests that reach the app (before the process is ready).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Final

import msgspec
import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope

from stellwerk.api import Answer, Answerer, ClientGone, Deferred, capability_of, whole_body
from stellwerk.auth import Scope as KeyScope
from stellwerk.awsapi.catalog import OPERATIONS
from stellwerk.awsapi.errors import AwsError, from_service, validation
from stellwerk.awsapi.ids import request_ids
from stellwerk.awsapi.opened import NAME, AwsApiOpened
from stellwerk.awsapi.operations import Answered, Call, Params
from stellwerk.awsapi.sigv4 import SignatureError, parse
from stellwerk.capability import Opened
from stellwerk.clock import utc_now
from stellwerk.service import ServiceError

log = structlog.get_logger("stellwerk.awsapi")

ROUTE: Final = "/"
CONTENT_TYPE: Final = "application/x-amz-json-1.1"
TARGET_PREFIX: Final = "AWSEvents."
_CONTENT_TYPE_HEADER: Final = (b"content-type", CONTENT_TYPE.encode())
_encode: Final = msgspec.json.Encoder().encode

ReadBody = Callable[[], Awaitable[bytes]]


async def respond(
    opened: AwsApiOpened,
    method: str,
    path: str,
    query: str,
    headers: dict[str, str],
    read_body: ReadBody,
) -> Answer:
    """The answer to one call; `headers` with lower-case names."""
    request_id = request_ids()
    try:
        status, body = 200, _encode(await _call(opened, method, path, query, headers, read_body))
        error_type: str | None = None
    except (AwsError, ServiceError) as exc:
        error = exc if isinstance(exc, AwsError) else from_service(exc)
        status, error_type = error.status, error.code
        body = _encode({"__type": error.code, "message": error.message})
    answer_headers = [
        (b"content-length", b"%d" % len(body)),
        _CONTENT_TYPE_HEADER,
        (b"x-amzn-requestid", request_id.encode()),
    ]
    if error_type is not None:
        answer_headers.append((b"x-amzn-errortype", error_type.encode()))
    return Answer(ROUTE, status, answer_headers, body)


async def _call(
    opened: AwsApiOpened,
    method: str,
    path: str,
    query: str,
    headers: dict[str, str],
    read_body: ReadBody,
) -> Answered:
    target = headers.get("x-amz-target", "")
    operation_name = target.removeprefix(TARGET_PREFIX)
    operation = OPERATIONS.get(operation_name) if target.startswith(TARGET_PREFIX) else None
    if operation is None:
        raise AwsError("UnknownOperationException", f"Unknown operation {target!r}")
    length = headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > opened.max_body:
        raise _too_large(opened.max_body)
    body = await read_body()
    try:
        claim = parse(headers, utc_now())
    except SignatureError as exc:
        raise AwsError(exc.code, exc.message) from None
    principal, secret = await opened.signing_key(claim.access_key_id)
    try:
        opened.verifier.verify(
            claim, (secret, secret.split("_", 2)[-1]), method, path, query, headers, body
        )
    except SignatureError as exc:
        log.warning("aws request signature refused", key_id=claim.access_key_id, reason=exc.code)
        raise AwsError(exc.code, exc.message) from None
    gate = opened.platform.gate
    # PutEvents leaves the request's token to ingest, taken with its events' (one call).
    ingests = operation.scope is KeyScope.INGEST
    await gate.allow(principal, operation_name, operation.scope, rated=not ingests)
    region = claim.region
    if "*" in region or "," in region:  # SigV4a's region set: the region is this site's
        region = opened.site
    params = operation.decode(body) if operation.decode is not None else None
    if params is None:
        params = _params(body)
    started = time.perf_counter()
    call = Call(
        opened.platform,
        principal,
        region,
        params,
        opened.store,
        opened.facades,
        f"{opened.scheme}://{headers.get('host', '')}",
    )
    if ingests:
        answer = await gate.counted(principal.tenant_id, partial(operation.run, call))
    else:
        answer = await operation.run(call)
    opened.observe(operation_name, time.perf_counter() - started)
    return answer


def _params(body: bytes) -> Params:
    try:
        params = msgspec.json.decode(body) if body.strip() else {}
    except (msgspec.DecodeError, RecursionError) as exc:  # RecursionError: nested too deep
        raise AwsError("SerializationException", f"The body is not JSON: {exc}") from None
    if not isinstance(params, dict):
        raise AwsError("SerializationException", "The body must be a JSON object")
    return params


def _too_large(limit: int) -> AwsError:
    return validation(f"The request body is larger than {limit} bytes.")


def fast_path(opened: Opened) -> Answerer:
    """The capability's `Capability.fast_path`: every `POST /` (this API's one route) taken
    whole; anything else is left to the app, at the cost of two comparisons."""
    assert isinstance(opened, AwsApiOpened)
    aws = opened

    def answerer(scope: Scope) -> Deferred | None:
        if scope["path"] != ROUTE or scope["method"] != "POST" or scope.get("root_path"):
            return None
        return Deferred(ROUTE, lambda receive: _respond_to(aws, scope, receive))

    return answerer


async def _respond_to(opened: AwsApiOpened, scope: Scope, receive: Receive) -> Answer:
    # The last of each header, as Starlette's `Headers.items()` into a dict gave them.
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
    query: str = scope["query_string"].decode("latin-1")

    async def read_body() -> bytes:
        return await whole_body(receive, opened.max_body, _too_large)

    try:
        return await respond(opened, "POST", scope["path"], query, headers, read_body)
    except ClientGone:
        return Answer(ROUTE, 400, [(b"content-length", b"0")])  # no one is there to read it


async def aws_json(request: Request) -> Response:
    """`POST /` when it reaches the app: answered as the fast path answers it."""
    opened = capability_of(request, NAME, AwsApiOpened)
    headers = {name.lower(): value for name, value in request.headers.items()}

    async def read_body() -> bytes:
        return await whole_body(request.receive, opened.max_body, _too_large)

    try:
        answer = await respond(
            opened, request.method, request.url.path, request.url.query, headers, read_body
        )
    except ClientGone:
        answer = Answer(ROUTE, 400, [(b"content-length", b"0")])
    response = Response(answer.body, answer.status)
    response.raw_headers = list(answer.headers)
    return response

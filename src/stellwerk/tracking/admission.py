"""Whether the collector takes a request from a source at all, the same for every protocol: the
page's origin (CORS), the source's kind, and the tenant's request rate; and the answer to a
browser's preflight. Each protocol answers a refusal in its own error shape, so a refusal is
raised as `Refused`, carrying the CORS headers its answer must keep: a refusal the page is
allowed to see (a wrong kind, a spent rate) is readable by it, one for an origin not allowed is
not.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response

from stellwerk.api import ApiError, api_error, capability_of
from stellwerk.service import TooManyRequests
from stellwerk.tracking import cors
from stellwerk.tracking.model import Binding, Kind
from stellwerk.tracking.opened import NAME, TrackingOpened


class Refused(Exception):
    """A request refused as a whole: the error, and the CORS headers its answer carries."""

    def __init__(self, error: ApiError, cors_headers: dict[str, str]) -> None:
        super().__init__(error.message)
        self.error = error
        self.cors = cors_headers


async def admitted(
    opened: TrackingOpened, binding: Binding, origin: str | None, kind: Kind, *, rated: bool = True
) -> dict[str, str]:
    """The CORS headers of the answer to a request for `binding`'s source from a page at
    `origin` (None: not from a browser), once the source allows the origin, is of `kind`, and,
    if `rated`, the tenant's request rate has a token for it; else `Refused`."""
    headers: dict[str, str] = {}
    if origin is not None:
        if not binding.allows_origin(origin):
            raise Refused(
                ApiError(
                    403,
                    "OriginNotAllowed",
                    f"source {binding.name!r} does not allow origin {origin[:100]!r}",
                ),
                {},
            )
        headers = cors.answer_headers(origin)
    if binding.kind != kind:
        raise Refused(
            ApiError(
                403,
                "WrongSourceKind",
                f"source {binding.name!r} is a {binding.kind} source, not a {kind} source",
            ),
            headers,
        )
    if rated:
        spent = await opened.gate.request_rate.acquire(binding.tenant.id)
        if spent is not None:
            refusal = TooManyRequests(
                f"the tenant's request rate limit ({spent.rate:g}/s) is exhausted",
                retry_after=spent.retry_after,
            )
            raise Refused(api_error(refusal), headers)
    return headers


async def preflight(request: Request, refuse: Callable[[ApiError], Response]) -> Response:
    """A browser's question before it sends: answered yes if *some* source allows the page's
    origin (a preflight carries no write key, so its source is unknown); the request that
    follows is refused unless its own source does. `refuse` answers in the protocol's shape."""
    origin = request.headers.get("origin")
    if origin is not None:
        try:
            opened = capability_of(request, NAME, TrackingOpened)
        except ApiError as exc:
            return refuse(exc)
        if await opened.sources.origin_allowed(origin):
            return Response(status_code=204, headers=cors.preflight_headers(origin))
    return refuse(
        ApiError(403, "OriginNotAllowed", f"no source allows origin {(origin or '')[:100]!r}")
    )

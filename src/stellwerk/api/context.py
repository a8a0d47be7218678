"""What a request handler reaches through the app: the process's services, once they are ready."""

from __future__ import annotations

from starlette.requests import Request

from stellwerk.api.errors import ApiError
from stellwerk.ops.lifecycle import Lifecycle, NotReadyError
from stellwerk.services import Services


def lifecycle_of(request: Request) -> Lifecycle[Services]:
    lifecycle: Lifecycle[Services] = request.app.state.lifecycle
    return lifecycle


def services_of(request: Request) -> Services:
    try:
        return lifecycle_of(request).services
    except NotReadyError as exc:
        raise ApiError(503, "ServiceUnavailable", str(exc), headers={"Retry-After": "1"}) from None

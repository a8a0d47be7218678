"""What a request handler reaches through the app: the application layer, once it is ready."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, TypeVar

from starlette.requests import Request

from stellwerk.api.errors import ApiError
from stellwerk.ops import Lifecycle, NotReadyError
from stellwerk.service import Platform


class Serving(Protocol):
    """What the lifecycle hands out once the process is ready: its facades."""

    @property
    def platform(self) -> Platform: ...

    @property
    def capabilities(self) -> Mapping[str, object]:
        """The opened capabilities, by name (`stellwerk.capability`)."""
        ...


class ServingLifecycle(Protocol):
    """A process's `Lifecycle`, as the API sees it."""

    @property
    def services(self) -> Serving:
        """Raises `NotReadyError` until the process is ready."""
        ...


def lifecycle_of(request: Request) -> Lifecycle[Serving]:
    lifecycle: Lifecycle[Serving] = request.app.state.lifecycle
    return lifecycle


def platform_from(lifecycle: ServingLifecycle) -> Platform:
    """The facades, or 503 with `Retry-After` while the process is not ready."""
    try:
        return lifecycle.services.platform
    except NotReadyError as exc:
        raise ApiError(503, "ServiceUnavailable", str(exc), headers={"Retry-After": "1"}) from None


def platform_of(request: Request) -> Platform:
    return platform_from(lifecycle_of(request))


T = TypeVar("T")


def capability_of(request: Request, name: str, kind: type[T]) -> T:
    """The opened capability `name` (a `kind`) of the process answering, or 503 with
    `Retry-After` while the process is not ready."""
    try:
        found = lifecycle_of(request).services.capabilities[name]
    except NotReadyError as exc:
        raise ApiError(503, "ServiceUnavailable", str(exc), headers={"Retry-After": "1"}) from None
    if not isinstance(found, kind):
        raise TypeError(f"capability {name!r} is a {type(found).__name__}, not a {kind.__name__}")
    return found

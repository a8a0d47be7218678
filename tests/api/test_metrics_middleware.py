"""RequestMetricsMiddleware on a real Starlette app, driven in-process through httpx."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.types import Message, Receive, Scope, Send

from stellwerk.api.middleware.metrics import UNMATCHED, RequestMetricsMiddleware
from stellwerk.ops.metrics import Metrics

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(metrics: Metrics) -> Samples:
    body, _ = metrics.render()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def requests_total(metrics: Metrics, method: str, route: str, status: int) -> float:
    key = frozenset({("method", method), ("route", route), ("status", str(status))})
    return samples(metrics).get(("stellwerk_http_requests_total", key), 0.0)


def duration_count(metrics: Metrics, method: str, route: str) -> float:
    key = frozenset({("method", method), ("route", route)})
    return samples(metrics).get(("stellwerk_http_request_duration_seconds_count", key), 0.0)


def in_flight(metrics: Metrics) -> float:
    return samples(metrics)[("stellwerk_http_requests_in_flight", frozenset())]


def build_app(metrics: Metrics) -> Starlette:
    async def get_bus(request: Request) -> Response:
        return JSONResponse({"bus": request.path_params["bus"]})

    async def create_bus(request: Request) -> Response:
        return JSONResponse({"bus": request.path_params["bus"]}, status_code=201)

    async def crash(request: Request) -> Response:
        raise RuntimeError("the endpoint is broken")

    async def forbidden(request: Request) -> Response:
        raise HTTPException(403, "not your bus")

    async def report_in_flight(request: Request) -> Response:
        # Read back through the exposition, as a scraper would see it mid-request.
        return PlainTextResponse(str(in_flight(metrics)))

    async def get_rule(request: Request) -> Response:
        return PlainTextResponse(request.path_params["rule"])

    async def get_item(request: Request) -> Response:
        return JSONResponse({"item": request.path_params["item"]})

    tenant_routes = [Route("/buses/{bus}/rules/{rule}", get_rule)]
    return Starlette(
        routes=[
            Route("/v1/buses/{bus}", get_bus, methods=["GET"]),
            Route("/v1/buses/{bus}", create_bus, methods=["PUT"]),
            Route("/v1/items/{item:int}", get_item),
            Route("/crash", crash),
            Route("/forbidden", forbidden),
            Route("/in-flight", report_in_flight),
            Mount("/v1/tenants/{tenant}", routes=tenant_routes),
        ],
        middleware=[Middleware(RequestMetricsMiddleware, metrics=metrics)],
    )


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def client(metrics: Metrics) -> AsyncIterator[httpx.AsyncClient]:
    # raise_app_exceptions=False so that a crashing endpoint yields the 500 a real server sends.
    transport = httpx.ASGITransport(build_app(metrics), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://stellwerk.test") as c:
        yield c


async def test_labels_use_the_route_template_not_the_raw_path(
    client: httpx.AsyncClient, metrics: Metrics
) -> None:
    for bus in ("orders", "payments", "orders"):
        response = await client.get(f"/v1/buses/{bus}")
        assert response.status_code == 200

    assert requests_total(metrics, "GET", "/v1/buses/{bus}", 200) == 3
    assert duration_count(metrics, "GET", "/v1/buses/{bus}") == 3
    routes = {
        dict(labels)["route"]
        for name, labels in samples(metrics)
        if name == "stellwerk_http_requests_total"
    }
    assert routes == {"/v1/buses/{bus}"}


async def test_status_is_the_one_sent(client: httpx.AsyncClient, metrics: Metrics) -> None:
    assert (await client.put("/v1/buses/orders")).status_code == 201
    assert (await client.get("/forbidden")).status_code == 403

    assert requests_total(metrics, "PUT", "/v1/buses/{bus}", 201) == 1
    assert requests_total(metrics, "GET", "/forbidden", 403) == 1


async def test_converters_are_left_out_of_the_template(
    client: httpx.AsyncClient, metrics: Metrics
) -> None:
    response = await client.get("/v1/items/7")
    assert response.json() == {"item": 7}
    assert requests_total(metrics, "GET", "/v1/items/{item}", 200) == 1


async def test_unmatched_paths_share_one_label(client: httpx.AsyncClient, metrics: Metrics) -> None:
    for path in ("/nope", "/v1/buses", "/v1/buses/a/b/c"):
        assert (await client.get(path)).status_code == 404

    assert requests_total(metrics, "GET", UNMATCHED, 404) == 3


async def test_wrong_method_counts_under_the_route(
    client: httpx.AsyncClient, metrics: Metrics
) -> None:
    assert (await client.post("/v1/buses/orders")).status_code == 405
    assert requests_total(metrics, "POST", "/v1/buses/{bus}", 405) == 1


async def test_unknown_methods_are_folded_into_one_label(
    client: httpx.AsyncClient, metrics: Metrics
) -> None:
    await client.request("BREW", "/nope")
    await client.request("PROPFIND", "/nope")
    assert requests_total(metrics, "OTHER", UNMATCHED, 404) == 2


async def test_app_exception_is_recorded_as_500(
    client: httpx.AsyncClient, metrics: Metrics
) -> None:
    response = await client.get("/crash")

    assert response.status_code == 500
    assert requests_total(metrics, "GET", "/crash", 500) == 1
    assert duration_count(metrics, "GET", "/crash") == 1
    assert in_flight(metrics) == 0


async def test_in_flight_counts_the_request_and_returns_to_zero(
    client: httpx.AsyncClient, metrics: Metrics
) -> None:
    response = await client.get("/in-flight")

    assert float(response.text) == 1
    assert in_flight(metrics) == 0


async def test_mounted_routes_get_the_full_template(
    client: httpx.AsyncClient, metrics: Metrics
) -> None:
    response = await client.get("/v1/tenants/acme/buses/orders/rules/big-orders")

    assert response.text == "big-orders"
    template = "/v1/tenants/{tenant}/buses/{bus}/rules/{rule}"
    assert requests_total(metrics, "GET", template, 200) == 1


async def test_exception_without_starlette_error_handling_is_recorded_and_raised(
    metrics: Metrics,
) -> None:
    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        raise ValueError("broken before answering")

    middleware = RequestMetricsMiddleware(broken, metrics)
    transport = httpx.ASGITransport(middleware)
    async with httpx.AsyncClient(transport=transport, base_url="http://stellwerk.test") as c:
        with pytest.raises(ValueError, match="broken before answering"):
            await c.get("/anything")

    assert requests_total(metrics, "GET", UNMATCHED, 500) == 1
    assert in_flight(metrics) == 0


async def test_lifespan_passes_through_without_being_counted(metrics: Metrics) -> None:
    seen: list[str] = []

    async def lifespan_app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])
        message = await receive()
        assert message["type"] == "lifespan.startup"
        await send({"type": "lifespan.startup.complete"})

    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        sent.append(message)

    await RequestMetricsMiddleware(lifespan_app, metrics)({"type": "lifespan"}, receive, send)

    assert seen == ["lifespan"]
    assert sent == [{"type": "lifespan.startup.complete"}]
    assert not [name for name, _ in samples(metrics) if name == "stellwerk_http_requests_total"]

"""The HTTP edge: the Starlette app's routes, middleware and the OpenAPI document, as thin
adapters over the service layer (parse, call a facade, render)."""

from stellwerk.api.bodies import json_response
from stellwerk.api.context import platform_from
from stellwerk.api.endpoints import Endpoint, build_routes
from stellwerk.api.errors import (
    ApiError,
    ErrorBody,
    ErrorMiddleware,
    api_error,
    handle_api_error,
    handle_http_exception,
)
from stellwerk.api.middleware import BodyLimitMiddleware, IngestFastPath, RequestMetricsMiddleware
from stellwerk.api.openapi import Operation, build_openapi
from stellwerk.api.routes import ENDPOINTS, HEALTH_ENDPOINTS

__all__ = [
    "ENDPOINTS",
    "HEALTH_ENDPOINTS",
    "ApiError",
    "BodyLimitMiddleware",
    "Endpoint",
    "ErrorBody",
    "ErrorMiddleware",
    "IngestFastPath",
    "Operation",
    "RequestMetricsMiddleware",
    "api_error",
    "build_openapi",
    "build_routes",
    "handle_api_error",
    "handle_http_exception",
    "json_response",
    "platform_from",
]

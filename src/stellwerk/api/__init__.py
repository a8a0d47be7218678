"""The HTTP edge: the Starlette app's routes, middleware and the OpenAPI document, as thin
adapters over the service layer (parse, call a facade, render)."""

from stellwerk.api.bodies import json_response, path_name, read_json
from stellwerk.api.context import capability_of, platform_from, platform_of
from stellwerk.api.endpoints import Endpoint, build_routes, name_param
from stellwerk.api.errors import (
    ApiError,
    ErrorBody,
    ErrorMiddleware,
    answer_to,
    api_error,
    handle_api_error,
    handle_http_exception,
)
from stellwerk.api.middleware import (
    Answer,
    Answerer,
    BodyLimitMiddleware,
    ClientGone,
    Deferred,
    FastPaths,
    IngestFastPath,
    RequestMetricsMiddleware,
    check_declared,
    principal_of,
    too_large,
    whole_body,
)
from stellwerk.api.openapi import Operation, Parameter, build_openapi
from stellwerk.api.routes import ENDPOINTS, HEALTH_ENDPOINTS

__all__ = [
    "ENDPOINTS",
    "HEALTH_ENDPOINTS",
    "Answer",
    "Answerer",
    "ApiError",
    "BodyLimitMiddleware",
    "ClientGone",
    "Deferred",
    "Endpoint",
    "ErrorBody",
    "ErrorMiddleware",
    "FastPaths",
    "IngestFastPath",
    "Operation",
    "Parameter",
    "RequestMetricsMiddleware",
    "answer_to",
    "api_error",
    "build_openapi",
    "build_routes",
    "capability_of",
    "check_declared",
    "handle_api_error",
    "handle_http_exception",
    "json_response",
    "name_param",
    "path_name",
    "platform_from",
    "platform_of",
    "principal_of",
    "read_json",
    "too_large",
    "whole_body",
]

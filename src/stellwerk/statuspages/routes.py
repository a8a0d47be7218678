"""The admin API of status pages: `/v1/status-pages/{page}` and its components.

Thin adapters over `StatusPages`: parse, call, render. Admin keys change, read keys read; all
of it scoped to the caller's tenant.
"""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from stellwerk.api import (
    Endpoint,
    ErrorBody,
    capability_of,
    json_response,
    name_param,
    path_name,
    principal_of,
    read_json,
)
from stellwerk.auth import Scope
from stellwerk.statuspages.model import Component, ComponentInput, Page, PageInput
from stellwerk.statuspages.opened import NAME, StatusPagesOpened
from stellwerk.statuspages.service import StatusPages

TAG = "status-pages"


class PageList(msgspec.Struct):
    pages: list[Page]


class ComponentList(msgspec.Struct):
    components: list[Component]


def status_pages(request: Request) -> StatusPages:
    return capability_of(request, NAME, StatusPagesOpened).pages


def page_name(request: Request) -> str:
    return path_name(request, "status page", "page")


def component_name(request: Request) -> str:
    return path_name(request, "component", "component")


async def put_page(request: Request) -> Response:
    name = page_name(request)
    body = await read_json(request, PageInput)
    page, created = await status_pages(request).put_page(principal_of(request.scope), name, body)
    return json_response(page, 201 if created else 200)


async def get_page(request: Request) -> Response:
    name = page_name(request)
    return json_response(await status_pages(request).get_page(principal_of(request.scope), name))


async def delete_page(request: Request) -> Response:
    name = page_name(request)
    await status_pages(request).delete_page(principal_of(request.scope), name)
    return Response(status_code=204)


async def list_pages(request: Request) -> Response:
    pages = await status_pages(request).list_pages(principal_of(request.scope))
    return json_response(PageList(pages=pages))


async def put_component(request: Request) -> Response:
    page, component = page_name(request), component_name(request)
    body = await read_json(request, ComponentInput, empty=ComponentInput())
    made, created = await status_pages(request).put_component(
        principal_of(request.scope), page, component, body
    )
    return json_response(made, 201 if created else 200)


async def get_component(request: Request) -> Response:
    page, component = page_name(request), component_name(request)
    return json_response(
        await status_pages(request).get_component(principal_of(request.scope), page, component)
    )


async def delete_component(request: Request) -> Response:
    page, component = page_name(request), component_name(request)
    await status_pages(request).delete_component(principal_of(request.scope), page, component)
    return Response(status_code=204)


async def list_components(request: Request) -> Response:
    page = page_name(request)
    found = await status_pages(request).list_components(principal_of(request.scope), page)
    return json_response(ComponentList(components=found))


_PAGE = {"page": name_param("the status page's name")}
_COMPONENT = {**_PAGE, "component": name_param("the component's id")}
_READ: dict[int, type | None] = {400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody}
_WRITE: dict[int, type | None] = {**_READ, 409: ErrorBody, 415: ErrorBody, 422: ErrorBody}
_PAGES = "/v1/status-pages"
_ONE_PAGE = "/v1/status-pages/{page}"
_COMPONENTS = "/v1/status-pages/{page}/components"
_ONE_COMPONENT = "/v1/status-pages/{page}/components/{component}"

ENDPOINTS = [
    Endpoint(
        "get",
        _PAGES,
        list_pages,
        "List the tenant's status pages",
        TAG,
        Scope.READ,
        responses={200: PageList, 401: ErrorBody, 403: ErrorBody},
    ),
    Endpoint(
        "put",
        _ONE_PAGE,
        put_page,
        "Create or update a status page",
        TAG,
        Scope.ADMIN,
        request_body=PageInput,
        responses={200: Page, 201: Page, **_WRITE},
        path_params=_PAGE,
    ),
    Endpoint(
        "get",
        _ONE_PAGE,
        get_page,
        "Describe a status page",
        TAG,
        Scope.READ,
        responses={200: Page, **_READ},
        path_params=_PAGE,
    ),
    Endpoint(
        "delete",
        _ONE_PAGE,
        delete_page,
        "Delete a status page and all on it",
        TAG,
        Scope.ADMIN,
        responses={204: None, **_READ},
        path_params=_PAGE,
    ),
    Endpoint(
        "get",
        _COMPONENTS,
        list_components,
        "List a page's components",
        TAG,
        Scope.READ,
        responses={200: ComponentList, **_READ},
        path_params=_PAGE,
    ),
    Endpoint(
        "put",
        _ONE_COMPONENT,
        put_component,
        "Create or update a component",
        TAG,
        Scope.ADMIN,
        request_body=ComponentInput,
        request_body_required=False,
        responses={200: Component, 201: Component, **_WRITE},
        path_params=_COMPONENT,
    ),
    Endpoint(
        "get",
        _ONE_COMPONENT,
        get_component,
        "Describe a component",
        TAG,
        Scope.READ,
        responses={200: Component, **_READ},
        path_params=_COMPONENT,
    ),
    Endpoint(
        "delete",
        _ONE_COMPONENT,
        delete_component,
        "Delete a component",
        TAG,
        Scope.ADMIN,
        responses={204: None, **_READ},
        path_params=_COMPONENT,
    ),
]

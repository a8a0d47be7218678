"""Logins of private and audience pages: the admin API (password, audiences, access links) and
the reader's login form at `/status/{page}/login`."""

from __future__ import annotations

from urllib.parse import quote

import msgspec
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from stellwerk.api import (
    ApiError,
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
from stellwerk.refs import TenantId
from stellwerk.service import TooManyRequests
from stellwerk.statuspages import forms
from stellwerk.statuspages.access import (
    Access,
    AccessInfo,
    AccessInput,
    AccessLink,
    Audience,
    AudienceInput,
    LinkInput,
    LoginRefused,
    cookie_name,
)
from stellwerk.statuspages.domains import asked_path, base_of
from stellwerk.statuspages.model import Page, Visibility
from stellwerk.statuspages.opened import NAME, StatusPagesOpened
from stellwerk.statuspages.routes import TAG, page_name

# The admin API.


class AudienceList(msgspec.Struct):
    audiences: list[Audience]


class LinkList(msgspec.Struct):
    links: list[AccessLink]


def access_of(request: Request) -> Access:
    return capability_of(request, NAME, StatusPagesOpened).access


def audience_name(request: Request) -> str:
    return path_name(request, "audience", "audience")


async def put_access(request: Request) -> Response:
    page = page_name(request)
    body = await read_json(request, AccessInput)
    made = await access_of(request).set_password(principal_of(request.scope), page, body)
    return json_response(made)


async def get_access(request: Request) -> Response:
    page = page_name(request)
    return json_response(await access_of(request).info(principal_of(request.scope), page))


async def put_audience(request: Request) -> Response:
    page, name = page_name(request), audience_name(request)
    body = await read_json(request, AudienceInput)
    made, created = await access_of(request).put_audience(
        principal_of(request.scope), page, name, body
    )
    return json_response(made, 201 if created else 200)


async def get_audience(request: Request) -> Response:
    page, name = page_name(request), audience_name(request)
    return json_response(
        await access_of(request).get_audience(principal_of(request.scope), page, name)
    )


async def list_audiences(request: Request) -> Response:
    page = page_name(request)
    found = await access_of(request).list_audiences(principal_of(request.scope), page)
    return json_response(AudienceList(audiences=found))


async def delete_audience(request: Request) -> Response:
    page, name = page_name(request), audience_name(request)
    await access_of(request).delete_audience(principal_of(request.scope), page, name)
    return Response(status_code=204)


async def create_link(request: Request) -> Response:
    page = page_name(request)
    body = await read_json(request, LinkInput, empty=LinkInput())
    made = await access_of(request).create_link(
        principal_of(request.scope), page, body, str(request.base_url)
    )
    return json_response(made, 201)


async def list_links(request: Request) -> Response:
    page = page_name(request)
    found = await access_of(request).list_links(principal_of(request.scope), page)
    return json_response(LinkList(links=found))


async def revoke_link(request: Request) -> Response:
    page = page_name(request)
    link = path_name(request, "access link", "link")
    await access_of(request).revoke_link(principal_of(request.scope), page, link)
    return Response(status_code=204)


_PAGE = {"page": name_param("the status page's name")}
_AUDIENCE = {**_PAGE, "audience": name_param("the audience's name")}
_LINK = {**_PAGE, "link": name_param("the access link's id")}
_READ: dict[int, type | None] = {400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody}
_WRITE: dict[int, type | None] = {**_READ, 409: ErrorBody, 415: ErrorBody, 422: ErrorBody}
_ACCESS = "/v1/status-pages/{page}/access"
_AUDIENCES = "/v1/status-pages/{page}/audiences"
_ONE_AUDIENCE = "/v1/status-pages/{page}/audiences/{audience}"
_LINKS = "/v1/status-pages/{page}/access-links"
_ONE_LINK = "/v1/status-pages/{page}/access-links/{link}"

ENDPOINTS = [
    Endpoint(
        "put",
        _ACCESS,
        put_access,
        "Set or remove a private page's password",
        TAG,
        Scope.ADMIN,
        request_body=AccessInput,
        responses={200: AccessInfo, **_WRITE},
        path_params=_PAGE,
    ),
    Endpoint(
        "get",
        _ACCESS,
        get_access,
        "Describe a page's login",
        TAG,
        Scope.READ,
        responses={200: AccessInfo, **_READ},
        path_params=_PAGE,
    ),
    Endpoint(
        "get",
        _AUDIENCES,
        list_audiences,
        "List an audience page's audiences",
        TAG,
        Scope.READ,
        responses={200: AudienceList, **_READ},
        path_params=_PAGE,
    ),
    Endpoint(
        "put",
        _ONE_AUDIENCE,
        put_audience,
        "Create or update an audience: its components and password",
        TAG,
        Scope.ADMIN,
        request_body=AudienceInput,
        responses={200: Audience, 201: Audience, **_WRITE},
        path_params=_AUDIENCE,
    ),
    Endpoint(
        "get",
        _ONE_AUDIENCE,
        get_audience,
        "Describe an audience",
        TAG,
        Scope.READ,
        responses={200: Audience, **_READ},
        path_params=_AUDIENCE,
    ),
    Endpoint(
        "delete",
        _ONE_AUDIENCE,
        delete_audience,
        "Delete an audience and its links; its readers' sessions end",
        TAG,
        Scope.ADMIN,
        responses={204: None, **_READ},
        path_params=_AUDIENCE,
    ),
    Endpoint(
        "post",
        _LINKS,
        create_link,
        "Make a signed access link (its URL is shown once)",
        TAG,
        Scope.ADMIN,
        request_body=LinkInput,
        request_body_required=False,
        responses={201: AccessLink, **_WRITE},
        path_params=_PAGE,
    ),
    Endpoint(
        "get",
        _LINKS,
        list_links,
        "List a page's access links",
        TAG,
        Scope.ADMIN,
        responses={200: LinkList, **_READ},
        path_params=_PAGE,
    ),
    Endpoint(
        "delete",
        _ONE_LINK,
        revoke_link,
        "Revoke an access link; sessions it made end",
        TAG,
        Scope.ADMIN,
        responses={204: None, **_READ},
        path_params=_LINK,
    ),
]


# The reader's login form.

_MACHINE_SUFFIXES = (".json", ".atom", ".rss", ".xml")


def login_required(request: Request, page: str) -> ApiError:
    """The refusal of a private page to a reader without a session: a browser is sent to the
    login form (303, coming back afterwards); JSON, feeds and API calls get 401."""
    path = asked_path(request)
    login_at = f"{base_of(request, page)}/login"
    sent_json = request.method not in ("GET", "HEAD") and not forms.is_form(request)
    if path.endswith(_MACHINE_SUFFIXES) or "/api/" in path or sent_json:
        return ApiError(
            401,
            "LoginRequired",
            f"status page {page!r} is private: log in at {login_at}",
            headers=dict(forms.NO_STORE),
        )
    target = f"{login_at}?next={quote(path, safe='/')}"
    return ApiError(
        303,
        "LoginRequired",
        f"status page {page!r} is private: log in at {target}",
        headers={"Location": target, **forms.NO_STORE},
    )


async def _page(request: Request) -> tuple[StatusPagesOpened, Page, TenantId]:
    opened = capability_of(request, NAME, StatusPagesOpened)
    name = page_name(request)
    tenant_id, page = await opened.pages.public_page(name)
    return opened, page, tenant_id


def _form(
    request: Request,
    access: Access,
    page: Page,
    *,
    status: int = 200,
    error: str | None = None,
    audience: str = "",
    next_path: str = "",
) -> Response:
    token, nonce = access.form_token(page.name)
    response = forms.render(
        "access_login.html",
        status,
        page=page,
        asks_audience=page.visibility is Visibility.AUDIENCE,
        audience=audience,
        error=error,
        csrf=token,
        next_path=next_path,
        action=f"{base_of(request, page.name)}/login",
    )
    forms.set_cookie(response, request, forms.CSRF_COOKIE, nonce, 3600, samesite="strict")
    return response


def _logged_in(request: Request, page: Page, cookie: tuple[str, int], target: str) -> Response:
    response = RedirectResponse(target, status_code=303, headers=forms.NO_STORE)
    value, max_age = cookie
    forms.set_cookie(response, request, cookie_name(page.name), value, max_age)
    return response


async def login_form(request: Request) -> Response:
    """The login form; with `?token=` an access link, which logs in at once."""
    opened, page, tenant_id = await _page(request)
    base = base_of(request, page.name)
    home = base or "/"
    token = request.query_params.get("token")
    if token is not None:
        try:
            cookie = await opened.access.follow_link(tenant_id, page, token)
        except LoginRefused as exc:
            return forms.render(
                "access_refused.html", 403, page=page, message=exc.message, login=f"{base}/login"
            )
        return _logged_in(request, page, cookie, home)
    return _form(
        request,
        opened.access,
        page,
        audience=request.query_params.get("audience", "")[:64],
        next_path=forms.local_path(request.query_params.get("next"), home),
    )


async def login(request: Request) -> Response:
    opened, page, tenant_id = await _page(request)
    fields = await forms.read_form(request)
    home = base_of(request, page.name) or "/"
    target = forms.local_path(forms.first(fields, "next"), home)
    audience = forms.first(fields, "audience")[:64]
    access = opened.access
    if not access.form_token_valid(
        page.name, forms.first(fields, "csrf"), request.cookies.get(forms.CSRF_COOKIE)
    ):
        return _form(
            request,
            access,
            page,
            status=403,
            error="The form expired or came from elsewhere. Please try again.",
            audience=audience,
            next_path=target,
        )
    try:
        cookie = await access.login(
            tenant_id, page, audience, forms.first(fields, "password"), forms.client_of(request)
        )
    except TooManyRequests as exc:
        response = _form(
            request,
            access,
            page,
            status=429,
            error=exc.message,
            audience=audience,
            next_path=target,
        )
        response.headers["Retry-After"] = str(exc.retry_after_seconds or 60)
        return response
    except LoginRefused as exc:
        return _form(
            request,
            access,
            page,
            status=401,
            error=exc.message,
            audience=audience,
            next_path=target,
        )
    return _logged_in(request, page, cookie, target)


async def logout(request: Request) -> Response:
    name = page_name(request)
    response = RedirectResponse(
        f"{base_of(request, name)}/login", status_code=303, headers=forms.NO_STORE
    )
    response.delete_cookie(cookie_name(name), path="/")
    return response


ROUTES = [
    Route("/status/{page}/login", login_form, methods=["GET", "HEAD"]),
    Route("/status/{page}/login", login, methods=["POST"]),
    Route("/status/{page}/logout", logout, methods=["POST"]),
]

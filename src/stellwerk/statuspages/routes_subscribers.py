"""Subscribing to a status page: the reader's form and JSON at `/status/{page}/subscribe`, the
links of the mails (confirm, unsubscribe), and the admin API of a page's subscribers."""

from __future__ import annotations

from typing import Annotated

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

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
from stellwerk.refs import TenantId
from stellwerk.service import InvalidRequest, NotFound, ServiceError
from stellwerk.statuspages import forms
from stellwerk.statuspages.domains import base_of
from stellwerk.statuspages.model import Page
from stellwerk.statuspages.opened import NAME, StatusPagesOpened
from stellwerk.statuspages.public import resolve
from stellwerk.statuspages.routes import TAG, page_name
from stellwerk.statuspages.subscribers import (
    ONE_OF_EMAIL_AND_WEBHOOK,
    Subscribed,
    SubscribeInput,
    Subscriber,
    Subscribers,
)


def subscribers_of(request: Request) -> Subscribers:
    return capability_of(request, NAME, StatusPagesOpened).subscribers


# The reader's side.


async def subscribe_form(request: Request) -> Response:
    viewing = await resolve(request)
    opened = capability_of(request, NAME, StatusPagesOpened)
    return await _form(request, opened, viewing.tenant_id, viewing.page, viewing.components)


async def _form(
    request: Request,
    opened: StatusPagesOpened,
    tenant_id: TenantId,
    page: Page,
    visible: frozenset[str] | None,
    *,
    status: int = 200,
    error: str | None = None,
    email: str = "",
) -> Response:
    components = await opened.pages.store.list_components(tenant_id, page.name)
    if visible is not None:
        components = [c for c in components if c.id in visible]
    token, nonce = opened.access.form_token(page.name)
    response = forms.render(
        "subscribe_form.html",
        status,
        page=page,
        components=components,
        csrf=token,
        error=error,
        email=email,
        mail=opened.subscribers.mail,
        action=f"{base_of(request, page.name)}/subscribe",
    )
    forms.set_cookie(response, request, forms.CSRF_COOKIE, nonce, 3600, samesite="strict")
    return response


async def subscribe(request: Request) -> Response:
    """A subscription, from the form (an HTML answer) or as JSON (a JSON answer)."""
    viewing = await resolve(request)
    opened = capability_of(request, NAME, StatusPagesOpened)
    page = viewing.page
    as_form = forms.is_form(request)
    if as_form:
        fields = await forms.read_form(request)
        if not opened.access.form_token_valid(
            page.name, forms.first(fields, "csrf"), request.cookies.get(forms.CSRF_COOKIE)
        ):
            return await _form(
                request,
                opened,
                viewing.tenant_id,
                page,
                viewing.components,
                status=403,
                error="The form expired or came from elsewhere. Please try again.",
            )
        email = forms.first(fields, "email").strip()
        body = SubscribeInput(email=email or None, components=fields.get("components", []))
    else:
        body = await read_json(request, SubscribeInput)
    try:
        answer = await opened.subscribers.subscribe(
            viewing.tenant_id,
            page,
            body,
            forms.origin_of(request),
            audience=viewing.audience,
            visible=viewing.components,
        )
    except ServiceError as exc:
        if not as_form:
            raise
        return await _form(
            request,
            opened,
            viewing.tenant_id,
            page,
            viewing.components,
            status=422,
            error=exc.message,
            email=body.email or "",
        )
    if as_form:
        return forms.render(
            "subscribe_message.html",
            202,
            page=page,
            home=base_of(request, page.name) or "/",
            title="Check your inbox",
            message="We sent a mail to confirm the address. Open its link to start getting "
            "notices.",
        )
    return json_response(answer, 202 if answer.kind == "email" else 201, headers=forms.NO_STORE)


async def _token_page(request: Request) -> tuple[StatusPagesOpened, TenantId, Page]:
    opened = capability_of(request, NAME, StatusPagesOpened)
    tenant_id, page = await opened.pages.public_page(page_name(request))
    return opened, tenant_id, page


async def _token(request: Request) -> str:
    token = request.query_params.get("token")
    if token is None and forms.is_form(request):
        token = forms.first(await forms.read_form(request), "token")
    return token or ""


async def confirm_form(request: Request) -> Response:
    """A button that confirms, not a link that does: mail scanners open links."""
    _, _, page = await _token_page(request)
    return forms.render(
        "subscribe_message.html",
        page=page,
        title="Confirm your subscription",
        message=f"Get notices from {page.title} at this address?",
        button="Confirm",
        home=base_of(request, page.name) or "/",
        action=f"{base_of(request, page.name)}/subscribe/confirm",
        token=await _token(request),
    )


async def confirm(request: Request) -> Response:
    opened, tenant_id, page = await _token_page(request)
    try:
        row = await opened.subscribers.confirm(tenant_id, page, await _token(request))
    except (InvalidRequest, NotFound) as exc:
        return _refused(request, page, exc)
    return forms.render(
        "subscribe_message.html",
        page=page,
        home=base_of(request, page.name) or "/",
        title="You are subscribed",
        message=f"{row.address} gets notices from {page.title}. Every mail has a link to "
        "unsubscribe.",
    )


async def unsubscribe_form(request: Request) -> Response:
    _, _, page = await _token_page(request)
    return forms.render(
        "subscribe_message.html",
        page=page,
        title="Unsubscribe",
        message=f"Stop getting notices from {page.title}?",
        button="Unsubscribe",
        home=base_of(request, page.name) or "/",
        action=f"{base_of(request, page.name)}/unsubscribe",
        token=await _token(request),
    )


async def unsubscribe(request: Request) -> Response:
    """Also the one-click unsubscribe of mail programs (RFC 8058: a POST to the link)."""
    opened, tenant_id, page = await _token_page(request)
    try:
        row = await opened.subscribers.unsubscribe(tenant_id, page, await _token(request))
    except (InvalidRequest, NotFound) as exc:
        return _refused(request, page, exc)
    return forms.render(
        "subscribe_message.html",
        page=page,
        home=base_of(request, page.name) or "/",
        title="Unsubscribed",
        message=f"{row.address} gets no more notices from {page.title}.",
    )


def _refused(request: Request, page: Page, exc: ServiceError) -> Response:
    status = 404 if isinstance(exc, NotFound) else 400
    return forms.render(
        "subscribe_message.html",
        status,
        page=page,
        home=base_of(request, page.name) or "/",
        title="This link does not work",
        message=exc.message,
    )


ROUTES = [
    Route("/status/{page}/subscribe", subscribe_form, methods=["GET", "HEAD"]),
    Route("/status/{page}/subscribe", subscribe, methods=["POST"]),
    Route("/status/{page}/subscribe/confirm", confirm_form, methods=["GET", "HEAD"]),
    Route("/status/{page}/subscribe/confirm", confirm, methods=["POST"]),
    Route("/status/{page}/unsubscribe", unsubscribe_form, methods=["GET", "HEAD"]),
    Route("/status/{page}/unsubscribe", unsubscribe, methods=["POST"]),
]


# The admin API.


class SubscriberList(msgspec.Struct):
    subscribers: list[Subscriber]


def subscriber_id(request: Request) -> str:
    return path_name(request, "subscriber", "subscriber")


async def list_subscribers(request: Request) -> Response:
    page = page_name(request)
    found = await subscribers_of(request).all(principal_of(request.scope), page)
    return json_response(SubscriberList(subscribers=found))


async def add_subscriber(request: Request) -> Response:
    """An admin subscribes someone; an email address still confirms itself."""
    page = page_name(request)
    principal = principal_of(request.scope)
    body = await read_json(request, SubscribeInput)
    subscribers = subscribers_of(request)
    found = await capability_of(request, NAME, StatusPagesOpened).pages.page(
        principal.tenant_id, page
    )
    answer = await subscribers.subscribe(principal.tenant_id, found, body, forms.origin_of(request))
    return json_response(answer, 202 if answer.kind == "email" else 201)


async def get_subscriber(request: Request) -> Response:
    page, id_ = page_name(request), subscriber_id(request)
    return json_response(await subscribers_of(request).get(principal_of(request.scope), page, id_))


async def delete_subscriber(request: Request) -> Response:
    page, id_ = page_name(request), subscriber_id(request)
    await subscribers_of(request).delete(principal_of(request.scope), page, id_)
    return Response(status_code=204)


_PAGE = {"page": name_param("the status page's name")}
_ONE = {**_PAGE, "subscriber": name_param("the subscriber's id")}
_READ: dict[int, type | None] = {400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody}
_SUBSCRIBERS = "/v1/status-pages/{page}/subscribers"
_ONE_SUBSCRIBER = "/v1/status-pages/{page}/subscribers/{subscriber}"

ENDPOINTS = [
    Endpoint(
        "get",
        _SUBSCRIBERS,
        list_subscribers,
        "List a page's subscribers",
        TAG,
        Scope.ADMIN,
        responses={200: SubscriberList, **_READ},
        path_params=_PAGE,
    ),
    Endpoint(
        "post",
        _SUBSCRIBERS,
        add_subscriber,
        "Subscribe an email address (it confirms itself) or a webhook",
        TAG,
        Scope.ADMIN,
        request_body=Annotated[SubscribeInput, ONE_OF_EMAIL_AND_WEBHOOK],
        responses={201: Subscribed, 202: Subscribed, **_READ, 409: ErrorBody, 422: ErrorBody},
        path_params=_PAGE,
    ),
    Endpoint(
        "get",
        _ONE_SUBSCRIBER,
        get_subscriber,
        "Describe a subscriber",
        TAG,
        Scope.ADMIN,
        responses={200: Subscriber, **_READ},
        path_params=_ONE,
    ),
    Endpoint(
        "delete",
        _ONE_SUBSCRIBER,
        delete_subscriber,
        "Delete a subscriber (a webhook's rule with it)",
        TAG,
        Scope.ADMIN,
        responses={204: None, **_READ},
        path_params=_ONE,
    ),
]

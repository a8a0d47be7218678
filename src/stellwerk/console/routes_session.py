"""Logging in with a key, and out: the session cookie is set and cleared here."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from stellwerk.auth import Scope
from stellwerk.console.sessions import COOKIE, LOGIN_COOKIE
from stellwerk.console.web import (
    PREFIX,
    SECURITY_HEADERS,
    View,
    console_of,
    read_form,
    reading_page,
    refused,
    render,
    to_login,
)
from stellwerk.service import ServiceError, Unauthorized

_LOGIN_SECONDS = 3600  # how long a login form may sit before it is posted


def _then(request: Request, value: object) -> str:
    then = value if isinstance(value, str) else ""
    return then if then.startswith(PREFIX + "/") and "//" not in then else f"{PREFIX}/buses"


async def login_form(request: Request) -> Response:
    console = console_of(request)
    nonce = console.sessions.new_nonce()
    response = render(
        console,
        "login.html",
        then=_then(request, request.query_params.get("then")),
        token=console.sessions.token(nonce),
        error=None,
    )
    _set_cookie(request, response, LOGIN_COOKIE, nonce, _LOGIN_SECONDS)
    return response


async def login(request: Request) -> Response:
    console = console_of(request)
    try:
        form = await read_form(request)
    except ServiceError as exc:
        return refused(console, exc)
    then = _then(request, form.get("then"))
    if not console.sessions.token_valid(request.cookies.get(LOGIN_COOKIE), form.get("csrf")):
        # A login posted from another site, or after the form's cookie went: show a fresh form.
        return _form_again(request, then, "The login form expired; please log in again.", 403)
    key = form.get("key")
    if not isinstance(key, str) or not key.strip():
        return _form_again(request, then, "Enter an API key.", 400)
    try:
        principal = await console.platform.gate.authenticator.authenticate(f"Bearer {key.strip()}")
    except Unauthorized:
        return _form_again(request, then, "That key is not valid (unknown or revoked).", 401)
    if principal.scope is Scope.INGEST:
        return _form_again(
            request, then, "An ingest key cannot use the console: use a read or admin key.", 403
        )
    value, _session = console.sessions.seal(key.strip())
    response = RedirectResponse(then, status_code=303, headers=SECURITY_HEADERS)
    _set_cookie(request, response, COOKIE, value, int(console.sessions.seconds))
    response.delete_cookie(LOGIN_COOKIE, path=PREFIX)
    return response


def _form_again(request: Request, then: str, error: str, status: int) -> Response:
    console = console_of(request)
    nonce = console.sessions.new_nonce()
    response = render(
        console,
        "login.html",
        status,
        then=then,
        token=console.sessions.token(nonce),
        error=error,
    )
    _set_cookie(request, response, LOGIN_COOKIE, nonce, _LOGIN_SECONDS)
    return response


@reading_page
async def logout(view: View) -> Response:
    await view.form()  # the CSRF check: another site may not log a person out
    response = to_login(f"{PREFIX}/buses")
    response.delete_cookie(COOKIE, path=PREFIX)
    return response


async def index(_request: Request) -> Response:
    return RedirectResponse(f"{PREFIX}/buses", status_code=303, headers=SECURITY_HEADERS)


def _set_cookie(request: Request, response: Response, name: str, value: str, seconds: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=seconds,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )

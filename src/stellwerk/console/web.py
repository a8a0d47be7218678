"""What every console page shares: the session it is asked under, the form's CSRF check,
rendering a template, and refusals as pages.

A handler is `async def page(view: View) -> Response`, wrapped by `page(...)`: without a live
session it redirects to the login (an expired one too); with a key whose scope does not allow
the method it answers 403; a `ServiceError` becomes a page with its status and message.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qs, quote, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from stellwerk.api import api_error, capability_of
from stellwerk.auth import Principal, Scope
from stellwerk.console.opened import NAME, ConsoleOpened
from stellwerk.console.sessions import COOKIE, Session
from stellwerk.service import (
    Forbidden,
    Platform,
    ServiceError,
    TooManyRequests,
    Unauthorized,
    UnsupportedMediaType,
)

PREFIX: Final = "/console"
MAX_FORM_BYTES: Final = 512 * 1024
# No inline script or style: what a stored event smuggles into a page cannot run even if it
# escaped its escaping. Inline SVG is markup, not an image, so `img-src` need not allow data.
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class Form:
    """A posted form (`application/x-www-form-urlencoded`, the only kind the console's forms
    send): each field's values in order."""

    def __init__(self, fields: dict[str, list[str]]) -> None:
        self._fields = fields

    def get(self, name: str, default: str | None = None) -> str | None:
        values = self._fields.get(name)
        return values[0] if values else default

    def getlist(self, name: str) -> list[str]:
        return self._fields.get(name, [])


async def read_form(request: Request) -> Form:
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType("the console takes forms as application/x-www-form-urlencoded")
    if int(request.headers.get("content-length") or 0) > MAX_FORM_BYTES:
        raise BadForm(f"the form is larger than {MAX_FORM_BYTES // 1024} KB")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise BadForm(f"the form is larger than {MAX_FORM_BYTES // 1024} KB")
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise BadForm("the form is not UTF-8") from None
    return Form(parse_qs(text, keep_blank_values=True, max_num_fields=1000))


class BadForm(ServiceError):
    """A form the console cannot take (no CSRF token, a field missing)."""


class LoginNeeded(Exception):
    """No live session: the person logs in again, and comes back to `then`."""

    def __init__(self, then: str) -> None:
        self.then = then


def console_of(request: Request) -> ConsoleOpened:
    console = capability_of(request, NAME, ConsoleOpened)
    if console.rates.exposition is None:
        # An embedded gateway beside a pipeline process serves both processes' metrics on
        # /metrics (as the health route reads them); the charts count both from then on.
        peers = getattr(request.app.state, "peer_metrics", None)
        if peers is not None:
            console.rates.exposition = _merged(peers)
    return console


def _merged(peers: Any) -> Callable[[], Awaitable[str]]:
    async def exposition() -> str:
        body, _content_type = await peers.render()
        text: str = body.decode()
        return text

    return exposition


@dataclass
class View:
    """One request to a page: who asks (their principal and session) and what they may do."""

    request: Request
    console: ConsoleOpened
    principal: Principal
    session: Session
    _form: Form | None = None

    @property
    def platform(self) -> Platform:
        return self.console.platform

    @property
    def can_write(self) -> bool:
        return self.principal.scope is Scope.ADMIN

    def param(self, name: str) -> str:
        value: str = self.request.path_params[name]
        return value

    async def form(self) -> Form:
        """The posted form, once its CSRF token is checked."""
        if self._form is None:
            form = await read_form(self.request)
            if not self.console.sessions.token_valid_for(self.session, form.get("csrf")):
                raise Forbidden(
                    "the form's CSRF token is missing or not this session's: reload the page",
                    code="CsrfRefused",
                )
            self._form = form
        return self._form

    async def field(self, name: str, *, default: str | None = None) -> str:
        value = (await self.form()).get(name, default)
        if not isinstance(value, str):
            raise BadForm(f"the form has no field {name!r}", field=name)
        return value

    def render(self, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        return render(
            self.console,
            template,
            status,
            principal=self.principal,
            csrf=self.session.csrf,
            can_write=self.can_write,
            path=self.request.url.path,
            has_endpoints=self.console.facades.global_endpoints is not None,
            sections=[(slug(title), title) for title in self.console.facades.directories],
            **values,
        )

    def redirect(self, to: str) -> Response:
        return RedirectResponse(to, status_code=303, headers=SECURITY_HEADERS)


def slug(title: str) -> str:
    """A section's title as its path segment: `Status pages` is `status-pages`."""
    return "-".join(title.lower().split())


def render(console: ConsoleOpened, template: str, status: int = 200, **values: Any) -> HTMLResponse:
    html = console.templates.get_template(template).render(prefix=PREFIX, **values)
    return HTMLResponse(html, status, headers=SECURITY_HEADERS)


Handler = Callable[[View], Awaitable[Response]]


def page(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A console page: GET and HEAD need a read key's session, any other method an admin's."""
    return _page(handler, reads_only=False)


def reading_page(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A page whose forms change nothing (a pattern test, logging out): a read key may post."""
    return _page(handler, reads_only=True)


def _page(handler: Handler, *, reads_only: bool) -> Callable[[Request], Awaitable[Response]]:
    @functools.wraps(handler)
    async def answer(request: Request) -> Response:
        console = console_of(request)
        try:
            view = await admitted(request, console, reads_only=reads_only)
            return await handler(view)
        except LoginNeeded as exc:
            if request.method not in ("GET", "HEAD"):
                # Back to the page the form was on (its path only: never another site).
                exc.then = urlsplit(request.headers.get("referer", "")).path or PREFIX
            return to_login(exc.then)
        except ServiceError as exc:
            return refused(console, exc)

    return answer


async def admitted(request: Request, console: ConsoleOpened, *, reads_only: bool) -> View:
    session = console.sessions.open(request.cookies.get(COOKIE))
    then = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if session is None:
        raise LoginNeeded(then)
    needed = Scope.READ if reads_only or request.method in ("GET", "HEAD") else Scope.ADMIN
    gate = console.platform.gate
    try:
        principal = await gate.authenticator.authenticate(f"Bearer {session.key}")
    except Unauthorized:
        raise LoginNeeded(then) from None  # the key was revoked since
    if principal.scope is Scope.INGEST:
        raise LoginNeeded(then)
    if not principal.scope.allows(needed):
        raise Forbidden("this console is read-only: its key has scope read")
    spent = await gate.request_rate.acquire(principal.tenant_id)
    if spent is not None:
        raise TooManyRequests(
            f"the tenant's request rate limit ({spent.rate:g}/s) is exhausted",
            retry_after=spent.retry_after,
        )
    return View(request, console, principal, session)


def to_login(then: str) -> Response:
    safe = then if then.startswith(PREFIX + "/") or then == PREFIX else PREFIX
    return RedirectResponse(
        f"{PREFIX}/login?then={quote(safe)}", status_code=303, headers=SECURITY_HEADERS
    )


def refused(console: ConsoleOpened, exc: ServiceError) -> Response:
    answer = api_error(exc)
    headers: Mapping[str, str] = {**SECURITY_HEADERS, **answer.headers}
    response = render(console, "error.html", answer.status, http_status=answer.status, error=exc)
    response.headers.update(headers)
    return response

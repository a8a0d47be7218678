"""The server-rendered forms of status pages (log in, subscribe): their templates, bodies,
cookies and CSRF tokens. They work without JavaScript.

CSRF is a signed double submit: the form carries a token signed for the page with a nonce, and
a cookie carries the nonce (SameSite=Strict); a cross-site post has neither.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import parse_qs

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from stellwerk.api import ApiError

CSRF_COOKIE: Final = "stellwerk_form"
MAX_FORM_BYTES: Final = 16 * 1024
NO_STORE: Final = {"Cache-Control": "private, no-store"}

_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


def render(template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A template of templates/ as an answer nobody may cache (it holds a form's token)."""
    html = _templates.get_template(template).render(**context)
    return HTMLResponse(html, status_code=status, headers=NO_STORE)


def is_form(request: Request) -> bool:
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return media == "application/x-www-form-urlencoded"


async def read_form(request: Request) -> dict[str, list[str]]:
    """An url-encoded form's fields, each with all its values; 413 past `MAX_FORM_BYTES`."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise ApiError(413, "PayloadTooLarge", f"a form is at most {MAX_FORM_BYTES} bytes")
    try:
        return parse_qs(body.decode(), keep_blank_values=True, max_num_fields=200)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, "InvalidRequest", f"the form cannot be read: {exc}") from None


def first(fields: dict[str, list[str]], name: str) -> str:
    """A form field's first value ("" when absent)."""
    values = fields.get(name)
    return values[0] if values else ""


def origin_of(request: Request) -> str:
    """The site the reader came to, as links back to it start (`https://status.acme.example`)."""
    scheme = "https" if over_tls(request) else request.url.scheme
    return f"{scheme}://{request.url.netloc}"


def over_tls(request: Request) -> bool:
    """Whether the reader came over TLS, to us or to the proxy in front (X-Forwarded-Proto)."""
    forwarded = request.headers.get("x-forwarded-proto", "").split(",", 1)[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


def set_cookie(
    response: Response,
    request: Request,
    name: str,
    value: str,
    max_age: int,
    *,
    samesite: Literal["lax", "strict"] = "lax",
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        secure=over_tls(request),
        samesite=samesite,
    )


def client_of(request: Request) -> str:
    """Who is asking, for rate limits: the peer's address (a proxy's own header can be forged)."""
    return request.client.host if request.client is not None else "unknown"


def local_path(target: str | None, default: str) -> str:
    """`target` when it is a path on this site, else `default`: never an open redirect."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return default
    if any(c in target for c in "\r\n\\"):
        return default
    return target

"""Private and audience pages over the whole app (SQLite and PostgreSQL): passwords, signed
access links, session cookies, audiences, and every refusal.

A probe capability serves `statuspages.public.resolve` as JSON at `/probe/{page}`, so that what
a reader may see is checked through the one function every public handler calls; the real
pages are checked too."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from tests.conftest import RunningApp, app_running
from tests.polling import eventually

from stellwerk.app import default_capabilities
from stellwerk.capability import Capability, CapabilityContext, Duty, Role
from stellwerk.config import load_settings
from stellwerk.statuspages import StatusPagesOpened
from stellwerk.statuspages.access import cookie_name
from stellwerk.statuspages.public import resolve

PASSWORD = "correct horse battery"


async def seen(request: Request) -> Response:
    viewing = await resolve(request)
    components = sorted(viewing.components) if viewing.components is not None else None
    return JSONResponse(
        {"page": viewing.page.name, "audience": viewing.audience, "components": components}
    )


class Nothing:
    def duties(self) -> Mapping[Role, Sequence[Duty]]:
        return {}

    async def close(self) -> None:
        pass


async def open_probe(context: CapabilityContext) -> Nothing:
    return Nothing()


PROBE = Capability(
    name="probe",
    open=open_probe,
    routes=[
        Route("/probe/{page}", seen),
        Route("/probe/{page}/api/v2/summary.json", seen),
        Route("/probe/{page}/history.atom", seen),
    ],
)


@pytest.fixture
async def app(tmp_path: Path, database_url: str) -> AsyncIterator[RunningApp]:
    settings = load_settings({"data_dir": str(tmp_path / "data"), "database_url": database_url})
    async with app_running(settings, [*default_capabilities(), PROBE]) as running:
        yield running


async def make_page(app: RunningApp, name: str, visibility: str, *components: str) -> None:
    made = await app.client.put(
        f"/v1/status-pages/{name}",
        headers=app.admin,
        json={"title": f"{name} status", "visibility": visibility},
    )
    assert made.status_code in (200, 201), made.text
    for component in components:
        added = await app.client.put(
            f"/v1/status-pages/{name}/components/{component}", headers=app.admin
        )
        assert added.status_code == 201, added.text


async def log_in(
    client: httpx.AsyncClient,
    page: str,
    password: str,
    *,
    audience: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """Fill in and send the login form as a browser would: its CSRF token and cookie."""
    form = await client.get(f"/status/{page}/login", headers=headers)
    assert form.status_code == 200, form.text
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token is not None
    fields = {"csrf": token.group(1), "password": password, "next": f"/status/{page}"}
    if audience is not None:
        fields["audience"] = audience
    sent = dict(headers or {})
    if "Secure" in form.headers["set-cookie"]:
        # Behind TLS the browser sends the Secure cookie back; httpx on plain HTTP would not.
        nonce = re.search(r"stellwerk_form=([^;]+)", form.headers["set-cookie"])
        assert nonce is not None
        sent["Cookie"] = f"stellwerk_form={nonce.group(1)}"
    return await client.post(f"/status/{page}/login", data=fields, headers=sent)


def reader(app: RunningApp) -> httpx.AsyncClient:
    """A browser of its own: a cookie jar apart from the admin's client."""
    return httpx.AsyncClient(transport=app.client._transport, base_url="http://stellwerk")


def access_of(app: RunningApp) -> Any:
    opened = app.services.capabilities["status-pages"]
    assert isinstance(opened, StatusPagesOpened)
    return opened.access


async def test_a_private_page_shows_nothing_without_a_login(app: RunningApp) -> None:
    await make_page(app, "acme", "private", "api")
    page = await app.client.get("/probe/acme")
    assert page.status_code == 303
    assert page.headers["location"] == "/status/acme/login?next=/probe/acme"
    assert "no-store" in page.headers["cache-control"]
    assert "api" not in page.text
    for machine in ("/probe/acme/api/v2/summary.json", "/probe/acme/history.atom"):
        refused = await app.client.get(machine)
        assert refused.status_code == 401, machine
        assert refused.json()["error"] == "LoginRequired"
        assert "no-store" in refused.headers["cache-control"]
    # No password set yet: no password opens it.
    async with reader(app) as browser:
        tried = await log_in(browser, "acme", "")
        assert tried.status_code == 401
        assert "wrong password" in tried.text
    # An unknown page is 404, private or not.
    assert (await app.client.get("/status/nope/login")).status_code == 404


async def test_the_right_password_opens_a_private_page_with_a_safe_cookie(app: RunningApp) -> None:
    await make_page(app, "acme", "private", "api")
    set_password = await app.client.put(
        "/v1/status-pages/acme/access", headers=app.admin, json={"password": PASSWORD}
    )
    assert set_password.status_code == 200, set_password.text
    assert set_password.json()["password_set"] is True
    assert PASSWORD not in set_password.text
    described = (await app.client.get("/v1/status-pages/acme/access", headers=app.admin)).json()
    assert described["password_set"] is True
    assert described["visibility"] == "private"

    async with reader(app) as browser:
        wrong = await log_in(browser, "acme", "not the password")
        assert wrong.status_code == 401
        assert "wrong password" in wrong.text
        assert cookie_name("acme") not in wrong.headers.get("set-cookie", "")
        assert (await browser.get("/probe/acme")).status_code == 303

        right = await log_in(browser, "acme", PASSWORD)
        assert right.status_code == 303
        assert right.headers["location"] == "/status/acme"
        cookie = right.headers["set-cookie"]
        assert cookie.startswith(cookie_name("acme") + "=")
        assert "HttpOnly" in cookie
        assert "SameSite=lax" in cookie
        assert "Max-Age=604800" in cookie
        assert "Secure" not in cookie  # plain HTTP: a Secure cookie would never come back
        shown = await browser.get("/probe/acme")
        assert shown.status_code == 200
        assert shown.json() == {"page": "acme", "audience": None, "components": None}
        assert (await browser.get("/probe/acme/api/v2/summary.json")).status_code == 200

        # A session made before the password changed ends with it.
        changed = await app.client.put(
            "/v1/status-pages/acme/access", headers=app.admin, json={"password": "a new one!"}
        )
        assert changed.status_code == 200
        assert (await browser.get("/probe/acme")).status_code == 303

    async with reader(app) as browser:
        behind_tls = await log_in(
            browser, "acme", "a new one!", headers={"X-Forwarded-Proto": "https"}
        )
        assert behind_tls.status_code == 303
        assert "Secure" in behind_tls.headers["set-cookie"]


async def test_a_session_cookie_cannot_be_altered_or_carried_to_another_page(
    app: RunningApp,
) -> None:
    for name in ("acme", "other"):
        await make_page(app, name, "private")
        await app.client.put(
            f"/v1/status-pages/{name}/access", headers=app.admin, json={"password": PASSWORD}
        )
    async with reader(app) as browser:
        assert (await log_in(browser, "acme", PASSWORD)).status_code == 303
        value = browser.cookies[cookie_name("acme")]
    async with reader(app) as browser:
        browser.cookies.set(cookie_name("other"), value)
        assert (await browser.get("/probe/other")).status_code == 303
        payload, mac = value.split(".")
        flipped = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1]
        browser.cookies.set(cookie_name("acme"), f"{flipped}.{mac}")
        assert (await browser.get("/probe/acme")).status_code == 303
        browser.cookies.set(cookie_name("acme"), "garbage")
        assert (await browser.get("/probe/acme")).status_code == 303
        browser.cookies.set(cookie_name("acme"), value)
        assert (await browser.get("/probe/acme")).status_code == 200


async def test_the_login_form_refuses_a_post_without_its_token(app: RunningApp) -> None:
    await make_page(app, "acme", "private")
    await app.client.put(
        "/v1/status-pages/acme/access", headers=app.admin, json={"password": PASSWORD}
    )
    async with reader(app) as browser:
        forged = await browser.post("/status/acme/login", data={"password": PASSWORD})
        assert forged.status_code == 403
        assert "expired or came from elsewhere" in forged.text
        assert cookie_name("acme") not in forged.headers.get("set-cookie", "")
        # A token without its cookie (another browser's, say) does not do either.
        form = await browser.get("/status/acme/login")
        token = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert token is not None
        browser.cookies.clear()
        stolen = await browser.post(
            "/status/acme/login", data={"password": PASSWORD, "csrf": token.group(1)}
        )
        assert stolen.status_code == 403


async def test_after_login_the_reader_goes_back_but_never_to_another_site(
    app: RunningApp,
) -> None:
    await make_page(app, "acme", "private")
    await app.client.put(
        "/v1/status-pages/acme/access", headers=app.admin, json={"password": PASSWORD}
    )
    async with reader(app) as browser:
        form = await browser.get("/status/acme/login?next=/status/acme/api/v2/summary.json")
        assert 'name="next" value="/status/acme/api/v2/summary.json"' in form.text
        for evil in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
            form = await browser.get("/status/acme/login", params={"next": evil})
            assert 'name="next" value="/status/acme"' in form.text, evil
            token = re.search(r'name="csrf" value="([^"]+)"', form.text)
            assert token is not None
            sent = await browser.post(
                "/status/acme/login",
                data={"csrf": token.group(1), "password": PASSWORD, "next": evil},
            )
            assert sent.headers["location"] == "/status/acme", evil


async def test_password_attempts_are_rate_limited(app: RunningApp) -> None:
    await make_page(app, "acme", "private")
    await app.client.put(
        "/v1/status-pages/acme/access", headers=app.admin, json={"password": PASSWORD}
    )
    async with reader(app) as browser:
        answers = [(await log_in(browser, "acme", f"guess {n}")).status_code for n in range(11)]
        assert answers[:10] == [401] * 10
        assert answers[10] == 429
        limited = await log_in(browser, "acme", PASSWORD)  # even the right one, for now
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
        assert "too many login attempts" in limited.text


async def test_signed_access_links_log_in_until_they_expire_or_are_revoked(
    app: RunningApp,
) -> None:
    await make_page(app, "acme", "private", "api")
    made = await app.client.post(
        "/v1/status-pages/acme/access-links",
        headers=app.admin,
        json={"expires_in_seconds": 3600, "label": "for Bob"},
    )
    assert made.status_code == 201, made.text
    link = made.json()
    assert link["url"].startswith("http://stellwerk/status/acme/login?token=")
    assert link["label"] == "for Bob"
    assert link["audience"] is None
    path = link["url"].removeprefix("http://stellwerk")
    listed = (await app.client.get("/v1/status-pages/acme/access-links", headers=app.admin)).json()
    assert [x["id"] for x in listed["links"]] == [link["id"]]
    assert "url" not in listed["links"][0]  # the token is never kept

    async with reader(app) as browser:
        followed = await browser.get(path)
        assert followed.status_code == 303
        assert followed.headers["location"] == "/status/acme"
        cookie = followed.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=lax" in cookie
        max_age = int(re.search(r"Max-Age=(\d+)", cookie).group(1))  # type: ignore[union-attr]
        assert 3500 < max_age <= 3600  # the session ends with the link
        assert (await browser.get("/probe/acme")).status_code == 200

        tampered = await browser.get(path[:-3] + ("abc" if not path.endswith("abc") else "xyz"))
        assert tampered.status_code == 403
        assert "not valid" in tampered.text

        revoked = await app.client.delete(
            f"/v1/status-pages/acme/access-links/{link['id']}", headers=app.admin
        )
        assert revoked.status_code == 204
        assert (await browser.get("/probe/acme")).status_code == 303  # its session ended
        again = await browser.get(path)
        assert again.status_code == 403
        assert "revoked" in again.text

    later = await app.client.post(
        "/v1/status-pages/acme/access-links", headers=app.admin, json={"expires_in_seconds": 60}
    )
    access = access_of(app)
    now = datetime.now(UTC)
    access.clock = lambda: now + timedelta(seconds=61)
    async with reader(app) as browser:
        expired = await browser.get(later.json()["url"].removeprefix("http://stellwerk"))
        assert expired.status_code == 403
        assert "expired" in expired.text
        assert cookie_name("acme") not in expired.headers.get("set-cookie", "")


async def test_audiences_see_only_their_components(app: RunningApp) -> None:
    await make_page(app, "acme", "audience", "api", "db", "billing")
    partners = await app.client.put(
        "/v1/status-pages/acme/audiences/partners",
        headers=app.admin,
        json={"components": ["api"], "password": "partners pass"},
    )
    assert partners.status_code == 201, partners.text
    assert partners.json()["components"] == ["api"]
    assert partners.json()["password_set"] is True
    staff = await app.client.put(
        "/v1/status-pages/acme/audiences/staff",
        headers=app.admin,
        json={"components": ["api", "db", "billing"], "password": "staff password"},
    )
    assert staff.status_code == 201
    listed = (await app.client.get("/v1/status-pages/acme/audiences", headers=app.admin)).json()
    assert [a["name"] for a in listed["audiences"]] == ["partners", "staff"]

    async with reader(app) as browser:
        form = await browser.get("/status/acme/login")
        assert 'name="audience"' in form.text
        wrong = await log_in(browser, "acme", "staff password", audience="partners")
        assert wrong.status_code == 401
        assert (await log_in(browser, "acme", "partners pass", audience="partners")).status_code
        shown = (await browser.get("/probe/acme")).json()
        assert shown == {"page": "acme", "audience": "partners", "components": ["api"]}
    async with reader(app) as browser:
        await log_in(browser, "acme", "staff password", audience="staff")
        shown = (await browser.get("/probe/acme")).json()
        assert shown["audience"] == "staff"
        assert shown["components"] == ["api", "billing", "db"]

        # A new component list shows at once; the password is kept when the body omits it.
        narrowed = await app.client.put(
            "/v1/status-pages/acme/audiences/staff", headers=app.admin, json={"components": ["db"]}
        )
        assert narrowed.status_code == 200
        assert narrowed.json()["password_set"] is True
        assert (await browser.get("/probe/acme")).json()["components"] == ["db"]

        # Deleting the audience ends its sessions.
        gone = await app.client.delete("/v1/status-pages/acme/audiences/staff", headers=app.admin)
        assert gone.status_code == 204
        assert (await browser.get("/probe/acme")).status_code == 303

    # A link for an audience logs in as that audience.
    link = await app.client.post(
        "/v1/status-pages/acme/access-links", headers=app.admin, json={"audience": "partners"}
    )
    assert link.status_code == 201
    assert link.json()["audience"] == "partners"
    async with reader(app) as browser:
        await browser.get(link.json()["url"].removeprefix("http://stellwerk"))
        assert (await browser.get("/probe/acme")).json()["audience"] == "partners"


async def test_a_session_fits_only_the_visibility_it_was_made_for(app: RunningApp) -> None:
    await make_page(app, "acme", "private", "api")
    await app.client.put(
        "/v1/status-pages/acme/access", headers=app.admin, json={"password": PASSWORD}
    )
    async with reader(app) as browser:
        await log_in(browser, "acme", PASSWORD)
        assert (await browser.get("/probe/acme")).status_code == 200
        # The page becomes an audience page: the whole-page session no longer opens it, as
        # soon as the page cache has taken the change in (its invalidation event).
        await make_page(app, "acme", "audience")
        await eventually(lambda: browser.get("/probe/acme"), accept=lambda r: r.status_code == 303)
        # And public again: everyone sees it whole.
        await make_page(app, "acme", "public")
        shown = await eventually(
            lambda: browser.get("/probe/acme"), accept=lambda r: r.status_code == 200
        )
        assert shown.json()["audience"] is None


async def test_a_deleted_page_forgets_its_logins(app: RunningApp) -> None:
    await make_page(app, "acme", "private")
    await app.client.put(
        "/v1/status-pages/acme/access", headers=app.admin, json={"password": PASSWORD}
    )
    async with reader(app) as browser:
        await log_in(browser, "acme", PASSWORD)
        assert (await app.client.delete("/v1/status-pages/acme", headers=app.admin)).status_code
        await make_page(app, "acme", "private")
        assert (await browser.get("/probe/acme")).status_code == 303
        assert (await log_in(browser, "acme", PASSWORD)).status_code == 401
    info = (await app.client.get("/v1/status-pages/acme/access", headers=app.admin)).json()
    assert info["password_set"] is False


async def test_bad_input_is_refused_naming_the_problem(app: RunningApp) -> None:
    await make_page(app, "acme", "audience", "api")
    short = await app.client.put(
        "/v1/status-pages/acme/access", headers=app.admin, json={"password": "short"}
    )
    assert short.status_code == 422
    assert short.json()["field"] == "$.password"
    unknown = await app.client.put(
        "/v1/status-pages/acme/audiences/partners",
        headers=app.admin,
        json={"components": ["api", "nope"]},
    )
    assert unknown.status_code == 422
    assert unknown.json()["field"] == "$.components[1]"
    assert "nope" in unknown.json()["message"]
    no_audience = await app.client.post(
        "/v1/status-pages/acme/access-links", headers=app.admin, json={"audience": "ghosts"}
    )
    assert no_audience.status_code == 422
    assert no_audience.json()["field"] == "$.audience"
    too_long = await app.client.post(
        "/v1/status-pages/acme/access-links",
        headers=app.admin,
        json={"expires_in_seconds": 10 * 365 * 86_400},
    )
    assert too_long.status_code == 422
    assert too_long.json()["field"] == "$.expires_in_seconds"
    for path in ("access", "audiences/x", "access-links"):
        missing = await app.client.get(f"/v1/status-pages/ghost/{path}", headers=app.admin)
        assert missing.status_code == 404, path
    assert (
        await app.client.delete("/v1/status-pages/acme/access-links/nope", headers=app.admin)
    ).status_code == 404
    ingest_only = app.auth(app.bootstrap.ingest_key)
    forbidden = await app.client.put(
        "/v1/status-pages/acme/access", headers=ingest_only, json={"password": PASSWORD}
    )
    assert forbidden.status_code == 403


async def test_the_pages_show_each_audience_its_own_and_no_shared_cache_keeps_them(
    app: RunningApp,
) -> None:
    await make_page(app, "acme", "audience")
    for component, name in (("api", "Payments API"), ("db", "Ledger Database")):
        await app.client.put(
            f"/v1/status-pages/acme/components/{component}", headers=app.admin, json={"name": name}
        )
    for audience, components in (("partners", ["api"]), ("staff", ["db"])):
        await app.client.put(
            f"/v1/status-pages/acme/audiences/{audience}",
            headers=app.admin,
            json={"components": components, "password": f"{audience} password"},
        )
    anonymous = await app.client.get("/status/acme")
    assert anonymous.status_code == 303
    assert "Payments API" not in anonymous.text
    async with reader(app) as partners, reader(app) as staff:
        await log_in(partners, "acme", "partners password", audience="partners")
        await log_in(staff, "acme", "staff password", audience="staff")
        for _ in range(2):  # in turns: a cache keyed by page alone would mix them up
            for browser, own, other in (
                (partners, "Payments API", "Ledger Database"),
                (staff, "Ledger Database", "Payments API"),
            ):
                page = await browser.get("/status/acme")
                assert page.status_code == 200, page.text
                assert own in page.text
                assert other not in page.text
                assert page.headers["cache-control"].startswith("private")
        history = await partners.get("/status/acme/history")
        assert history.status_code == 200
        assert history.headers["cache-control"].startswith("private")


async def test_the_json_and_feeds_of_an_audience_hold_its_components_and_stay_private(
    app: RunningApp,
) -> None:
    await make_page(app, "acme", "audience", "api", "db")
    await app.client.put(
        "/v1/status-pages/acme/audiences/partners",
        headers=app.admin,
        json={"components": ["api"], "password": "partners password"},
    )
    assert (await app.client.get("/status/acme/api/v2/summary.json")).status_code == 401
    assert (await app.client.get("/status/acme/history.atom")).status_code == 401
    async with reader(app) as partners:
        await log_in(partners, "acme", "partners password", audience="partners")
        summary = await partners.get("/status/acme/api/v2/summary.json")
        assert summary.status_code == 200, summary.text
        assert [c["id"] for c in summary.json()["components"]] == ["api"]
        assert summary.headers["cache-control"].startswith("private")
        assert "access-control-allow-origin" not in summary.headers
        feed = await partners.get("/status/acme/history.atom")
        assert feed.status_code == 200
        assert feed.headers["cache-control"].startswith("private")
    public = await app.client.put(
        "/v1/status-pages/open", headers=app.admin, json={"title": "Open"}
    )
    assert public.status_code == 201
    shown = await app.client.get("/status/open/api/v2/summary.json")
    assert shown.headers["cache-control"].startswith("public")
    assert shown.headers["access-control-allow-origin"] == "*"


async def test_a_private_page_logs_in_on_its_custom_domain_and_stays_there(
    app: RunningApp,
) -> None:
    made = await app.client.put(
        "/v1/status-pages/acme",
        headers=app.admin,
        json={"title": "acme status", "visibility": "private", "domains": ["status.acme.example"]},
    )
    assert made.status_code == 201, made.text
    await app.client.put(
        "/v1/status-pages/acme/access", headers=app.admin, json={"password": PASSWORD}
    )
    opened = app.services.capabilities["status-pages"]
    assert isinstance(opened, StatusPagesOpened)
    await opened.domains.load()

    domain = "http://status.acme.example"
    async with httpx.AsyncClient(transport=app.client._transport, base_url=domain) as browser:
        sent_away = await browser.get("/history")
        assert sent_away.status_code == 303
        assert sent_away.headers["location"] == "/login?next=/history"
        machine = await browser.get("/api/v2/summary.json")
        assert machine.status_code == 401
        assert "log in at /login" in machine.json()["message"]

        form = await browser.get("/login?next=/history")
        assert form.status_code == 200
        assert 'action="/login"' in form.text
        assert 'name="next" value="/history"' in form.text
        token = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert token is not None
        fields = {"csrf": token.group(1), "password": PASSWORD, "next": "/history"}
        right = await browser.post("/login", data=fields)
        assert right.status_code == 303, right.text
        assert right.headers["location"] == "/history"
        cookie = right.headers["set-cookie"]
        assert cookie.startswith(cookie_name("acme") + "=")
        # Host-only (no Domain attribute): the session belongs to this domain and no other.
        assert "domain=" not in cookie.lower()
        assert "Path=/" in cookie
        assert "Secure" not in cookie
        shown = await browser.get("/")
        assert shown.status_code == 200
        assert "acme status" in shown.text
        # The cookie jar sends it to this host only: Stellwerk's own host asks to log in again.
        assert (await browser.get("http://stellwerk/status/acme")).status_code == 303

        logged_out = await browser.post("/logout")
        assert logged_out.headers["location"] == "/login"

    # Behind a TLS proxy on the domain, both cookies are Secure.
    async with httpx.AsyncClient(transport=app.client._transport, base_url=domain) as browser:
        tls = {"X-Forwarded-Proto": "https"}
        form = await browser.get("/login", headers=tls)
        assert "Secure" in form.headers["set-cookie"]
        nonce = re.search(r"stellwerk_form=([^;]+)", form.headers["set-cookie"])
        token = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert nonce is not None
        assert token is not None
        right = await browser.post(
            "/login",
            data={"csrf": token.group(1), "password": PASSWORD},
            headers={**tls, "Cookie": f"stellwerk_form={nonce.group(1)}"},
        )
        assert right.status_code == 303, right.text
        assert right.headers["location"] == "/"
        assert "Secure" in right.headers["set-cookie"]
        assert "domain=" not in right.headers["set-cookie"].lower()
